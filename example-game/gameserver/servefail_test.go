package main

import (
	"io"
	"log"
	"net"
	"testing"
	"time"

	"github.com/procswitch/supervisor/handoff"
)

// TestServeOnAfterStop: a handover that could not save resumes every
// stopped session where it stopped (a command split across the stop
// included) and accepts again on the same listener.
func TestServeOnAfterStop(t *testing.T) {
	ln := listen(t)
	defer ln.Close()
	w, err := newWorld(nil, nil, embeddedGoods, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(newGame(w, testRules(t), "v", 1), log.New(io.Discard, "", 0))
	stopAccepting := srv.acceptUntil(ln)
	a := dial(t, ln.Addr().String())
	a.expect(t, "LOGIN ada", "OK player=ada coin=100 version=v")
	if err := a.write("WO"); err != nil {
		t.Fatal(err)
	}
	stopAccepting()
	if got := len(srv.stop()); got != 1 {
		t.Fatalf("stopped %d sessions, want 1", got)
	}
	srv.resume()
	stopAccepting = srv.acceptUntil(ln)
	defer func() { stopAccepting(); srv.stop() }()
	a.expect(t, "RK", "OK coin=105")
	b := dial(t, ln.Addr().String()) // queued or new: accepted again
	b.expect(t, "LOGIN ben", "OK player=ben coin=100 version=v")
	a.expect(t, "STATUS", "OK player=ada coin=105 bag= version=v pid=1")
}

// TestResumeColdNotice: after a cold start a resumed session writes what
// the previous worker had not written, then noticeRestarted, then the
// replies to its pending commands; after a live handover, no notice.
func TestResumeColdNotice(t *testing.T) {
	for _, cold := range []bool{true, false} {
		ln := listen(t)
		c := dial(t, ln.Addr().String())
		sc, err := ln.Accept()
		ln.Close()
		if err != nil {
			t.Fatal(err)
		}
		snap := &snapshot{
			players:  []player{{id: "alice", coin: 110, level: 1}},
			sessions: []sessionRecord{{name: "c0", remote: c.conn.LocalAddr().String(), player: "alice", in: []byte("WORK\nSTA"), out: []byte("10\n")}},
		}
		p := startInproc(t, nil, snap, "new", 2)
		a := &app{world: p.world, srv: p.srv, restored: &restored{snapshot: *snap}, log: log.New(io.Discard, "", 0)}
		if n := a.resume([]handoff.Conn{{Name: "c0", Conn: sc}}, cold); n != 1 {
			t.Fatalf("resumed %d connections, want 1", n)
		}
		want := []string{"10", "OK coin=115"}
		if cold {
			want = []string{"10", noticeRestarted, "OK coin=115"}
		}
		for _, w := range want {
			if got, err := c.recv(); got != w || err != nil {
				t.Fatalf("cold %v: got %q, %v; want %q", cold, got, err, w)
			}
		}
		c.expect(t, "TUS", "OK player=alice coin=115 bag= version=new pid=2")
		p.srv.stop()
	}
}

// TestHangUpDespiteACopy: while another process holds a copy of a
// connection's socket (the supervisor during probation), the connections
// the game ends itself still end: after QUIT, after a line too long, and
// at a shutdown.
func TestHangUpDespiteACopy(t *testing.T) {
	ln := listen(t)
	p := startInproc(t, ln, &snapshot{}, "v", 1)
	copies := func() {
		t.Helper()
		p.srv.mu.Lock()
		defer p.srv.mu.Unlock()
		for s := range p.srv.sessions {
			f, err := s.conn.(*net.TCPConn).File() // a dup, as the supervisor's copy
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
		}
	}
	quit, long, idle := dial(t, ln.Addr().String()), dial(t, ln.Addr().String()), dial(t, ln.Addr().String())
	for _, c := range []*client{quit, long, idle} {
		c.expect(t, "STOCK 1001", "ERR not logged in: LOGIN <player-id> first")
	}
	copies()
	quit.expect(t, "QUIT", "BYE")
	quit.closed(t)
	long.expect(t, string(make([]byte, maxLine+1)), "ERR line too long: at most 1024 bytes")
	long.closed(t)
	ln.Close()
	<-p.accepting
	goodbye(p.srv.stop(), time.Second)
	idle.closed(t)
}
