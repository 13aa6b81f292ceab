package game

import (
	"regexp"
	"strconv"
	"syscall"
	"testing"
)

// TestLiveLayoutMigration: upgrades between builds whose --live regions
// have different layouts (layout 2's records are larger: bags of 16
// goods).
//   - A layout-2 build that fails after it migrated the region, before it
//     is ready: the rollback to layout 1 finds its region intact, and the
//     players their coins and connections.
//   - A layout-2 build that works: it migrates the region inside the
//     handover, the players keep coins, bags and connections, and once it
//     is ready it removes the layout-1 region from the fd store; a crash
//     after that restarts on the layout-2 region.
//   - Back to layout 1 afterwards: it cannot read layout 2, so it starts
//     from the snapshot file (an autosave made after the last change: no
//     loss), and the connections are hung up, their sessions unknown.
func TestLiveLayoutMigration(t *testing.T) {
	s := startSupervised(t, supervisedOpts{bin: bins.fixed, flags: []string{"--probation", "0"},
		workerArgs: []string{"--live", "--live-players", "100", "--autosave", "50ms"}})
	s.ready(t)
	alice, bob := dial(t, s.addr), dial(t, s.addr)
	alice.expect(t, "LOGIN alice", "OK player=alice coin=100 version="+fixedVersion)
	alice.expect(t, "WORK", "OK coin=105")
	alice.expect(t, "BUY 1001", "OK coin=95 item=1001 count=1 remain=999999")
	bob.expect(t, "LOGIN bob", "OK player=bob coin=100 version="+fixedVersion)

	// A layout-2 build that dies after migrating: rolled back.
	s.install(t, bins.layout2bad)
	bad := s.hup(t)
	if bad.ok {
		t.Fatalf("the upgrade to a build that exits after migrating succeeded")
	}
	at := bad.started
	s.waitRe(&at, regexp.MustCompile(`live: migrated the region from layout v1 to v2: 2 players`))
	alice.expect(t, "WORK", "OK coin=100") // the rolled-back layout-1 worker, on its intact region
	bob.expect(t, "WORK", "OK coin=105")

	// A layout-2 build that works.
	s.install(t, bins.layout2)
	o := s.hup(t)
	if !o.ok {
		t.Fatalf("upgrade to layout 2: %s", o.end.Str("reason"))
	}
	at = o.started
	s.waitRe(&at, regexp.MustCompile(`live: region\.v1 removed from the fd store`))
	alice.expect(t, "STATUS", "OK player=alice coin=100 bag=1001:1 version="+layoutV2+" pid="+strconv.Itoa(o.end.Ints("pids")[0]))
	alice.expect(t, "WORK", "OK coin=105")
	if err := syscall.Kill(o.end.Ints("pids")[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	bob.expect(t, "WORK", "OK coin=110") // the restarted worker, on the layout-2 region
	alice.expect(t, "WORK", "OK coin=110")
	s.waitRe(&s.at, regexp.MustCompile(`live restart: 2 players and 2 sessions resumed`))

	// Back to layout 1, after an autosave of the last change.
	s.waitRe(&s.at, regexp.MustCompile(`autosave: saved 2 players`))
	s.install(t, bins.fixed)
	if o := s.hup(t); !o.ok {
		t.Fatalf("upgrade back to layout 1: %s", o.end.Str("reason"))
	}
	if reply, err := alice.do("STATUS"); err == nil {
		t.Fatalf("a connection whose session was in the layout-2 region answered %q after the switch to layout 1", reply)
	}
	carol := dial(t, s.addr)
	carol.expect(t, "LOGIN alice", "OK player=alice coin=110 version="+fixedVersion)
	carol.expect(t, "WORK", "OK coin=115")
}
