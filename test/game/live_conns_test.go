package game

import (
	"syscall"
	"testing"
)

// With --live --live-conns=false the game keeps its data in the region but
// stores a connection only at a handover: an upgrade keeps every player
// connected; a kill -9 ends the connections accepted since, and keeps the
// coins of their players.
func TestLiveWithoutStoredConns(t *testing.T) {
	s := startSupervised(t, supervisedOpts{bin: bins.fixed,
		workerArgs: []string{"--live", "--live-players", "1000", "--live-conns=false"}})
	_, pid := s.ready(t)
	alice := dial(t, s.addr)
	alice.expect(t, "LOGIN alice", "OK player=alice coin=100 version="+fixedVersion)
	alice.expect(t, "WORK", "OK coin=105")

	o := s.hup(t)
	if !o.ok {
		t.Fatalf("upgrade failed: %s", o.end.Str("reason"))
	}
	newPID := o.end.Ints("pids")[0]
	if newPID == pid {
		t.Fatalf("the upgrade kept worker %d", pid)
	}
	alice.expect(t, "WORK", "OK coin=110") // the same connection, on the new worker

	bob := dial(t, s.addr) // accepted by the new worker: not stored
	bob.expect(t, "LOGIN bob", "OK player=bob coin=100 version="+fixedVersion)
	bob.expect(t, "WORK", "OK coin=105")
	if err := syscall.Kill(newPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if reply, err := bob.do("WORK"); err == nil {
		t.Fatalf("bob's connection, never stored, answered %q after a kill -9", reply)
	}
	alice.expect(t, "WORK", "OK coin=115") // stored at the handover: a pause
	bob = dial(t, s.addr)
	bob.expect(t, "LOGIN bob", "OK player=bob coin=105 version="+fixedVersion)
}
