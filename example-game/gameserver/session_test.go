package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/procswitch/supervisor/handoff"
)

// inproc is a game server in the test process, on a loopback listener:
// the same server, sessions and snapshot code as the binary, without the
// supervisor, so a test can stop it at will and look at its sessions.
type inproc struct {
	world     *world
	srv       *server
	ln        net.Listener
	accepting chan struct{}
}

func startInproc(t *testing.T, ln net.Listener, snap *snapshot, ver string, pid int) *inproc {
	t.Helper()
	w, err := newWorld(snap.players, snap.stock, embeddedGoods, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	p := &inproc{world: w, ln: ln, accepting: make(chan struct{})}
	p.srv = newServer(newGame(w, testRules(t), ver, pid), log.New(io.Discard, "", 0))
	if ln == nil {
		close(p.accepting)
		return p
	}
	go func() {
		defer close(p.accepting)
		p.srv.accept(ln)
	}()
	t.Cleanup(func() { ln.Close(); <-p.accepting; p.srv.stop() })
	return p
}

// handOver does what the old worker does on the drain signal, in process:
// stop accepting, stop the sessions, save the snapshot with them; it
// returns the snapshot read back and each connection as the next worker
// receives it (a duplicate of the fd; the old conn is closed, as at exit).
func (p *inproc) handOver(t *testing.T, path string) (*restored, []handoff.Conn) {
	t.Helper()
	if p.ln != nil {
		p.ln.Close()
		<-p.accepting
	}
	sessions := p.srv.stop()
	snap := &snapshot{kind: kindHandover, pid: 1, players: p.world.players, stock: p.world.stock}
	var conns []handoff.Conn
	for _, s := range sessions {
		snap.sessions = append(snap.sessions, s.record())
		conns = append(conns, handoff.Conn{Name: s.name, Conn: dupConn(t, s.conn)})
		s.conn.Close()
	}
	if err := writeSnapshot(context.Background(), path, "old", snap); err != nil {
		t.Fatal(err)
	}
	res, err := readSnapshot(path)
	if err != nil {
		t.Fatal(err)
	}
	return res, conns
}

func dupConn(t *testing.T, c net.Conn) net.Conn {
	t.Helper()
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	nc, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	return nc
}

// resume starts p's sessions from a restored snapshot, as the new worker's
// app.resume does.
func (p *inproc) resume(t *testing.T, res *restored, conns []handoff.Conn) {
	t.Helper()
	a := &app{world: p.world, srv: p.srv, restored: res, log: log.New(io.Discard, "", 0)}
	if n := a.resume(conns, false); n != len(conns) {
		t.Fatalf("resumed %d sessions of %d", n, len(conns))
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// TestResumePendingIO: a resumed session first writes the replies the old
// worker did not write, then runs the input it had read but not processed,
// then reads on.
func TestResumePendingIO(t *testing.T) {
	ln := listen(t)
	defer ln.Close()
	c := dial(t, ln.Addr().String())
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	p := startInproc(t, nil, &snapshot{players: []player{{id: "alice", coin: 110, level: 1}}}, "new", 2)
	defer p.srv.stop()
	p.srv.add(sc, sessionRecord{player: "alice", in: []byte("WORK\nSTA"), out: []byte("10\n")})
	for _, want := range []string{"10", "OK coin=115"} {
		if got, err := c.recv(); got != want || err != nil {
			t.Fatalf("got %q, %v; want %q", got, err, want)
		}
	}
	c.expect(t, "TUS", "OK player=alice coin=115 bag= version=new pid=2")
}

// TestHandoverInProcess stops a server with a logged-in session that has a
// partial line pending and one that has not logged in yet, saves, restores
// into a new server on duplicated fds, and both go on where they were.
func TestHandoverInProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snap")
	ln := listen(t)
	old := startInproc(t, ln, &snapshot{}, "old", 1)
	a, b := dial(t, ln.Addr().String()), dial(t, ln.Addr().String())
	a.expect(t, "LOGIN alice", "OK player=alice coin=100 version=old")
	a.expect(t, "WORK", "OK coin=105")
	if err := a.write("WORK\nSTA"); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.recv(); got != "OK coin=110" {
		t.Fatalf("got %q", got)
	}
	b.expect(t, "STOCK 1001", "ERR not logged in: LOGIN <player-id> first")
	if err := b.write("LOG"); err != nil {
		t.Fatal(err)
	}
	res, conns := old.handOver(t, path)
	if len(res.sessions) != 2 || len(res.players) != 1 {
		t.Fatalf("saved %d sessions and %d players, want 2 and 1", len(res.sessions), len(res.players))
	}
	next := startInproc(t, nil, &res.snapshot, "new", 2)
	next.resume(t, res, conns)
	a.expect(t, "TUS", "OK player=alice coin=110 bag= version=new pid=2")
	b.expect(t, "IN bob", "OK player=bob coin=100 version=new")
	b.expect(t, "BUY 1002", "OK coin=98 item=1002 count=1 remain=999999")
	next.srv.stop()
}

// TestHandoverWhileBlocked stops a session whose client sends many
// commands and reads none, so that the server is blocked writing replies,
// and the client's input queues: after the handover every reply arrives
// exactly once, in order, and every command has run exactly once.
func TestHandoverWhileBlocked(t *testing.T) {
	const pairs = 20000 // "WORK\nBUY 1002\n": +5, then -2
	path := filepath.Join(t.TempDir(), "snap")
	ln := listen(t)
	old := startInproc(t, ln, &snapshot{}, "old", 1)
	c := dial(t, ln.Addr().String())
	c.expect(t, "LOGIN blocked", "OK player=blocked coin=100 version=old")
	sent := make(chan error, 1)
	go func() {
		sent <- c.write(strings.Repeat("WORK\nBUY 1002\n", pairs))
	}()
	if got, err := c.recv(); got != "OK coin=105" || err != nil {
		t.Fatalf("first reply %q, %v", got, err)
	}
	res, conns := old.handOver(t, path)
	s := res.sessions[0]
	t.Logf("stopped with %d bytes read but not run and %d bytes of replies not written", len(s.in), len(s.out))
	next := startInproc(t, nil, &res.snapshot, "new", 2)
	next.resume(t, res, conns)
	coin := 105
	for i := 1; i <= pairs; i++ {
		if i > 1 {
			coin += 5
			want := fmt.Sprintf("OK coin=%d", coin)
			if got, err := c.recv(); got != want || err != nil {
				t.Fatalf("pair %d WORK: got %q, %v; want %q", i, got, err, want)
			}
		}
		coin -= 2
		want := fmt.Sprintf("OK coin=%d item=1002 count=%d remain=%d", coin, i, 1_000_000-i)
		if got, err := c.recv(); got != want || err != nil {
			t.Fatalf("pair %d BUY: got %q, %v; want %q", i, got, err, want)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	c.expect(t, "STOCK 1002", fmt.Sprintf("OK item=1002 remain=%d", 1_000_000-pairs))
	next.srv.stop()
}

// TestResumeUnknownConnection: a handed-over connection the snapshot has no
// session for (the newest snapshot was refused and an older one restored),
// or one whose session belongs to another client address, is hung up, not
// served with a state that may not be its own.
func TestResumeUnknownConnection(t *testing.T) {
	ln := listen(t)
	defer ln.Close()
	var clients []*client
	var conns []handoff.Conn
	for _, name := range []string{"c0", "c1", "c9"} {
		clients = append(clients, dial(t, ln.Addr().String()))
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, handoff.Conn{Name: name, Conn: sc})
	}
	snap := &snapshot{
		players: []player{{id: "alice", coin: 7, level: 1}},
		sessions: []sessionRecord{
			{name: "c0", remote: clients[0].conn.LocalAddr().String(), player: "alice"},
			{name: "c1", remote: "127.0.0.1:1", player: "alice"}, // another client's
		},
	}
	p := startInproc(t, nil, snap, "new", 2)
	defer p.srv.stop()
	a := &app{world: p.world, srv: p.srv, restored: &restored{snapshot: *snap}, log: log.New(io.Discard, "", 0)}
	if n := a.resume(conns, false); n != 1 {
		t.Fatalf("resumed %d connections, want 1", n)
	}
	clients[0].expect(t, "STATUS", "OK player=alice coin=7 bag= version=new pid=2")
	clients[1].closed(t)
	clients[2].closed(t)
}

// TestHeldSessionsRunAtOpen: a session started while the server holds its
// sessions (a resume, until READY=1) runs nothing until open; and a stop
// while they are held ends them as kept, without waiting for an open.
func TestHeldSessionsRunAtOpen(t *testing.T) {
	snap := &snapshot{}
	p := startInproc(t, nil, snap, "v", 1)
	ln := listen(t)
	defer ln.Close()
	serve := func() *client {
		c := dial(t, ln.Addr().String())
		conn, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		p.srv.add(conn, sessionRecord{})
		return c
	}
	p.srv.hold()
	c := serve()
	if err := c.write("LOGIN alice\n"); err != nil {
		t.Fatal(err)
	}
	// Nothing to wait for: that no reply comes is the point, within a bound.
	c.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if line, err := c.r.ReadString('\n'); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a held session answered %q (%v) before open", line, err)
	}
	p.srv.open()
	if reply, err := c.recv(); err != nil || !strings.HasPrefix(reply, "OK") {
		t.Fatalf("after open: %q, %v; want LOGIN's OK", reply, err)
	}

	p.srv.hold()
	serve()
	stopped := make(chan []*session, 1)
	go func() { stopped <- p.srv.stop() }()
	select {
	case kept := <-stopped:
		if len(kept) != 2 {
			t.Fatalf("stop kept %d sessions, want 2 (one held)", len(kept))
		}
	case <-time.After(waitBound):
		t.Fatal("stop did not return with a session held")
	}
}
