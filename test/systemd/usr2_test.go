package systemd_test

import (
	"strconv"
	"testing"
	"time"
)

// TestSelfUpgradeUSR2: SIGUSR2 to the supervisor under load starts a new
// supervisor process on the same sockets; systemd follows it (MainPID
// changes, the unit stays active), the old one drains and exits, no request
// fails, and the new one answers reload and stop.
func TestSelfUpgradeUSR2(t *testing.T) {
	c := need(t)
	startUnit(t, c, pathfindUnit)
	old := c.mainPID(t, pathfindUnit)
	load, _ := c.startLoad(t, pathfindURL)

	t0 := time.Now()
	if r := c.systemctl(30*time.Second, "kill", "-s", "USR2", "--kill-who=main", pathfindUnit); r.err != nil || r.code != 0 {
		t.Fatalf("%v", r)
	}
	states := map[string]bool{}
	var main int
	if !waitFor(time.Minute, func() bool {
		states[c.show(t, pathfindUnit, "ActiveState")] = true
		main, _ = strconv.Atoi(c.show(t, pathfindUnit, "MainPID"))
		return main != 0 && main != old
	}) {
		t.Fatalf("MainPID is still %d a minute after SIGUSR2 (states seen %v)\n%s", old, states, c.diag(pathfindUnit))
	}
	t.Logf("MainPID %d -> %d in %v", old, main, time.Since(t0).Round(time.Millisecond))
	if !waitFor(time.Minute, func() bool { return !c.alive(old) }) {
		t.Errorf("the old supervisor %d still runs a minute after the upgrade", old)
	}
	t.Logf("old supervisor gone %v after SIGUSR2", time.Since(t0).Round(time.Millisecond))
	for prop, want := range map[string]string{"ActiveState": "active", "SubState": "running"} {
		if got := c.show(t, pathfindUnit, prop); got != want {
			t.Errorf("after the self-upgrade: %s = %q, want %q\n%s", prop, got, want, c.diag(pathfindUnit))
		}
	}
	delete(states, "active")
	delete(states, "reloading")
	if len(states) > 0 {
		t.Errorf("the unit went through %v during the self-upgrade, want only active (or reloading)", states)
	}
	if got := c.mainPID(t, pathfindUnit); got != main {
		t.Errorf("MainPID moved on again, to %d", got)
	}
	// The new supervisor owns the control socket: a reload works.
	builds.installT(t, "pathfind", pathfindV2)
	if r := c.systemctl(reloadBound, "reload", pathfindUnit); r.err != nil || r.code != 0 {
		t.Errorf("reload after the self-upgrade: %v\n%s", r, c.diag(pathfindUnit))
	}
	res := finishLoad(t, load)
	if res.Failed != 0 || res.Requests == 0 {
		t.Errorf("load over the self-upgrade: %v", res)
	}
	inv := c.show(t, pathfindUnit, "InvocationID")
	if r := c.systemctl(stopBound, "stop", pathfindUnit); r.err != nil || r.code != 0 {
		t.Fatalf("stop after the self-upgrade: %v\n%s", r, c.diag(pathfindUnit))
	}
	c.stoppedCleanly(t, pathfindUnit, inv)
}

// TestCrashAfterSelfUpgrade: after a self-upgrade systemd warns that it
// supervises a main process it did not start ("not our child"); the test
// shows that it still notices that process's death: kill -9 of the new
// supervisor gets the unit restarted (Restart=on-failure), and it serves.
func TestCrashAfterSelfUpgrade(t *testing.T) {
	c := need(t)
	startUnit(t, c, pathfindUnit)
	old := c.mainPID(t, pathfindUnit)
	if r := c.systemctl(30*time.Second, "kill", "-s", "USR2", "--kill-who=main", pathfindUnit); r.err != nil || r.code != 0 {
		t.Fatalf("%v", r)
	}
	var main int
	if !waitFor(time.Minute, func() bool { main = c.mainPID(t, pathfindUnit); return main != old }) {
		t.Fatalf("MainPID is still %d a minute after SIGUSR2\n%s", old, c.diag(pathfindUnit))
	}
	if !waitFor(time.Minute, func() bool { return !c.alive(old) }) {
		t.Fatalf("the old supervisor %d still runs a minute after the upgrade", old)
	}
	c.must(t, 30*time.Second, "kill", "-KILL", strconv.Itoa(main))
	if !waitFor(time.Minute, func() bool {
		return c.show(t, pathfindUnit, "NRestarts") == "1" && c.show(t, pathfindUnit, "ActiveState") == "active"
	}) {
		t.Fatalf("no restart after the new supervisor %d was killed\n%s", main, c.diag(pathfindUnit))
	}
	load, s := c.startLoad(t, pathfindURL)
	t.Logf("restarted: supervisor %d, worker %d", c.mainPID(t, pathfindUnit), s.PID)
	if res := finishLoad(t, load); res.Failed != 0 {
		t.Errorf("load after the restart: %v", res)
	}
}
