package game

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
)

// With the supervisor's --standby, a standby worker has read the region
// ahead and follows it; a kill -9 of the worker promotes it at once (no
// process is started): the clients keep their connections and their data,
// get the restart's notice, and a new standby comes up. An upgrade ends the
// standby and its successor stands by for the new worker.
func TestLiveStandbyTakesOverAtCrash(t *testing.T) {
	s, pid, standby, alice := startWithStandby(t)
	for _, want := range []string{"OK coin=105", "OK coin=110"} {
		alice.expect(t, "WORK", want)
	}

	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	promoted := s.waitMsg(&s.at, "standby promoted: it takes the crashed worker's place", nil)
	if promoted.Int("pid") != standby || promoted.Int("dead") != pid {
		t.Fatalf("promoted %s, want standby %d for worker %d", promoted.Raw, standby, pid)
	}
	alice.conn.Write([]byte("WORK\n"))
	notice, err := alice.r.ReadString('\n')
	if err != nil || !strings.HasPrefix(notice, "NOTICE restarted: nothing lost") {
		t.Fatalf("after the promotion: %q, %v; want the restart's notice first", notice, err)
	}
	if reply, err := alice.r.ReadString('\n'); err != nil || reply != "OK coin=115\n" {
		t.Fatalf("WORK after the promotion: %q, %v", reply, err)
	}
	if _, err := alice.do("STATUS"); err != nil {
		t.Fatal(err)
	}
	next := s.waitMsg(&s.at, "standby waiting", nil).Int("pid")
	if next == standby || next == pid {
		t.Fatalf("new standby %d, want a new process", next)
	}

	o := s.hup(t) // the standby ends; the new worker gets its own
	if !o.ok {
		t.Fatalf("upgrade with a standby: %s", o.end.Str("reason"))
	}
	alice.expect(t, "WORK", "OK coin=120")
	after := s.waitMsg(&s.at, "standby waiting", nil)
	if after.Int("gen") != o.gen {
		t.Fatalf("after the upgrade to gen %d, a standby of gen %d", o.gen, after.Int("gen"))
	}
}

// A standby that dies is replaced after the restart back-off, and the
// worker serves on meanwhile; a stop ends both.
func TestLiveStandbyDies(t *testing.T) {
	s, pid, standby, alice := startWithStandby(t)
	if err := syscall.Kill(standby, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	s.waitMsg(&s.at, "standby exited", func(l line) bool { return l.Int("pid") == standby })
	alice.expect(t, "WORK", "OK coin=105") // the worker never noticed
	next := s.waitMsg(&s.at, "standby waiting", nil).Int("pid")
	if next == standby || next == pid {
		t.Fatalf("the standby after %d is %d (worker %d)", standby, next, pid)
	}

	// A stop while a standby's successor may be starting (its back-off
	// over or not): the supervisor exits only once every standby is gone.
	if err := syscall.Kill(next, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	s.waitMsg(&s.at, "standby exited", func(l line) bool { return l.Int("pid") == next })
	s.signal(syscall.SIGTERM)
	s.wait()
	pids := []int{pid}
	for _, l := range s.Log.All() {
		if l.Msg() == "standby started" {
			pids = append(pids, l.Int("pid"))
		}
	}
	for _, p := range pids {
		if err := syscall.Kill(p, 0); err == nil && !zombie(p) {
			t.Errorf("process %d outlived the supervisor", p)
		}
	}
}

// startWithStandby starts the game with --live under a supervisor with
// --standby, waits for the worker and its standby, and logs alice in.
func startWithStandby(t *testing.T) (s *supervised, pid, standby int, alice *client) {
	t.Helper()
	s = startSupervised(t, supervisedOpts{bin: bins.fixed, flags: []string{"--standby"},
		workerArgs: []string{"--live", "--live-players", "1000"}})
	_, pid = s.ready(t)
	standby = s.waitMsg(&s.at, "standby waiting", nil).Int("pid")
	alice = dial(t, s.addr)
	alice.expect(t, "LOGIN alice", "OK player=alice coin=100 version="+fixedVersion)
	return s, pid, standby, alice
}

// zombie says whether pid has exited and waits to be reaped.
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // gone
	}
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] == "Z"
}
