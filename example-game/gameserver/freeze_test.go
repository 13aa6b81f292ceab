package main

import (
	"bufio"
	"io"
	"log"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A --live server's freeze for a handover wakes none of its idle sessions,
// and none of them takes a line sent after it: the line stays in the
// socket, for the next worker, and the world is as it was. Before the
// freeze, each session's record settles, after every reply, where its
// connection stands, which is where the kernel says it stands: the next
// worker need not ask.
func TestFreezeLeavesIdleSessionsAndSettledRecords(t *testing.T) {
	srv := newLiveTestServer(t, &recordingStore{})
	w, lr := srv.game.world, srv.game.world.live
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	stopAccepting := srv.acceptUntil(ln)

	players := []string{"alice", "bob"}
	clients := make([]net.Conn, len(players))
	for i, p := range players {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		for _, cmd := range []string{"LOGIN " + p, "WORK"} {
			if _, err := io.WriteString(c, cmd+"\n"); err != nil {
				t.Fatal(err)
			}
			if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "OK ") {
				t.Fatalf("%s: %s: %q, %v", p, cmd, line, err)
			}
		}
		clients[i] = c
	}
	stopAccepting()

	// The reply is read, so the session has written it, and settles its
	// record right after: wait (bounded) for that, then ask the kernel.
	sessions := liveSessions(t, srv, len(players))
	for _, s := range sessions {
		var rec sessionRec
		for deadline := time.Now().Add(10 * time.Second); ; {
			w.mu.Lock()
			rec = lr.readSessions()[s.live.slot]
			w.mu.Unlock()
			if rec.state == markSettled || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		kernel := &liveIO{rc: s.live.rc}
		if err := kernel.positions(); err != nil {
			t.Fatal(err)
		}
		if rec.state != markSettled || rec.pos != kernel.pos || rec.outPos != kernel.outPos {
			t.Errorf("session %s's record: state %d, input %d, output %d; want settled (%d) where the kernel says: input %d, output %d",
				s.live.name, rec.state, rec.pos, rec.outPos, markSettled, kernel.pos, kernel.outPos)
		}
	}

	frozen, busy := srv.freeze()
	if len(frozen) != len(players) || busy != 0 {
		t.Fatalf("freeze returned %d sessions, %d of them busy; want %d, all idle", len(frozen), busy, len(players))
	}
	const line = "WORK\n"
	for _, c := range clients {
		if _, err := io.WriteString(c, line); err != nil {
			t.Fatal(err)
		}
	}
	// Each session's goroutine, woken by its line, sees the freeze and
	// returns; once all have, the lines must still be in the sockets.
	done := make(chan struct{})
	go func() { srv.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the frozen sessions' goroutines did not return on their clients' next line")
	}
	for _, s := range frozen {
		if queued := inputQueued(t, s.conn); queued != len(line) {
			t.Errorf("session %s: %d bytes left in the socket after the freeze, want the %d of %q", s.live.name, queued, len(line), line)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range players {
		if coin := w.players[w.index[p]].coin; coin != 105 {
			t.Errorf("%s has %d coins after a WORK sent to a frozen server, want 105 (one WORK before it)", p, coin)
		}
	}
}

// newLiveTestServer is a --live server with a world of no players, its
// region of room for 100, its connections stored in store.
func newLiveTestServer(t *testing.T, store fdStore) *server {
	t.Helper()
	w, err := newWorld(nil, nil, embeddedGoods, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	lr, err := createRegion(w, 100)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.mu.Lock() // the sessions write the region under it
		lr.r.Close()
		w.mu.Unlock()
	})
	w.live = lr
	srv := newServer(newGame(w, testRules(t), "test", 1), log.New(io.Discard, "", 0))
	srv.conns, srv.storeConns = newConnStore(store, srv.log), true
	return srv
}

// liveSessions returns the server's n sessions, each with its --live part.
func liveSessions(t *testing.T, srv *server, n int) []*session {
	t.Helper()
	srv.mu.Lock()
	defer srv.mu.Unlock()
	var ss []*session
	for s := range srv.sessions {
		if s.live == nil {
			t.Fatal("a session without its --live part")
		}
		ss = append(ss, s)
	}
	if len(ss) != n {
		t.Fatalf("%d sessions, want %d", len(ss), n)
	}
	return ss
}

// inputQueued is how many bytes c's socket holds unread.
func inputQueued(t *testing.T, c net.Conn) int {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ierr error
	if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil || ierr != nil {
		t.Fatal(err, ierr)
	}
	return n
}
