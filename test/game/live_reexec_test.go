package game

import (
	"strings"
	"syscall"
	"testing"
)

// A re-exec of the supervisor in place (SIGUSR2, --self-upgrade exec)
// keeps a --live game as it is: the same worker, the players' connections
// untouched (no notice: nothing restarted), and the live fd store, which
// holds the region and every connection, carried into the new image: a
// kill -9 afterwards is a pause for the players, not a disconnect, as
// before. The standby is ended before the exec and a new one comes up.
func TestLiveReexecKeepsPlayers(t *testing.T) {
	s := startSupervised(t, supervisedOpts{bin: bins.fixed, flags: []string{"--standby", "--self-upgrade", "exec"},
		workerArgs: []string{"--live", "--live-players", "1000"}})
	_, pid := s.ready(t)
	s.waitMsg(&s.at, "standby waiting", nil)
	alice := dial(t, s.addr)
	alice.expect(t, "LOGIN alice", "OK player=alice coin=100 version="+fixedVersion)
	alice.expect(t, "WORK", "OK coin=105")

	s.signal(syscall.SIGUSR2)
	e := s.waitMsg(&s.at, "re-exec in place: the new image serves, its workers adopted", nil)
	if pids := e.Ints("pids"); len(pids) != 1 || pids[0] != pid {
		t.Fatalf("re-exec: workers %v, want the same worker %d", pids, pid)
	}
	if n := e.Int("fd_store"); n < 2 {
		t.Fatalf("re-exec: the new image holds %d fds in the live store, want the region and alice's connection", n)
	}
	alice.expect(t, "WORK", "OK coin=110") // the same connection, no notice
	standby := s.waitMsg(&s.at, "standby waiting", nil).Int("pid")

	// The store came through: a crash keeps alice's connection.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	promoted := s.waitMsg(&s.at, "standby promoted: it takes the crashed worker's place", nil)
	if promoted.Int("pid") != standby {
		t.Fatalf("promoted %s, want the standby %d started after the re-exec", promoted.Raw, standby)
	}
	alice.conn.Write([]byte("WORK\n"))
	notice, err := alice.r.ReadString('\n')
	if err != nil || !strings.HasPrefix(notice, "NOTICE restarted: nothing lost") {
		t.Fatalf("after the crash: %q, %v; want the restart's notice", notice, err)
	}
	if reply, err := alice.r.ReadString('\n'); err != nil || reply != "OK coin=115\n" {
		t.Fatalf("WORK after the crash: %q, %v", reply, err)
	}
}
