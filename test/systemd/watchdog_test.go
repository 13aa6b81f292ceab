package systemd_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestWatchdog: with a watchdog period far below the unit's 30 s (a drop-in
// sets WatchdogSec=1s), the supervisor keeps systemd's watchdog fed, before
// and after a SIGUSR2 self-upgrade: the same invocation stays active, with
// no restart. Proving that nothing happens takes waiting: 3 periods on
// each side of the self-upgrade.
func TestWatchdog(t *testing.T) {
	c := need(t)
	dropIn := filepath.Join(c.rootfs(), "etc/systemd/system", pathfindUnit+".d")
	if err := os.MkdirAll(dropIn, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dropIn, "watchdog.conf"), []byte("[Service]\nWatchdogSec=1s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.RemoveAll(dropIn)
		c.systemctl(time.Minute, "daemon-reload")
	})
	c.must(t, time.Minute, "systemctl", "daemon-reload")
	startUnit(t, c, pathfindUnit)
	if got := c.show(t, pathfindUnit, "WatchdogUSec"); got != "1s" {
		t.Fatalf("WatchdogUSec %q, want 1s: the drop-in did not apply", got)
	}
	inv := c.show(t, pathfindUnit, "InvocationID")
	old := c.mainPID(t, pathfindUnit)
	time.Sleep(3 * time.Second)
	if r := c.systemctl(30*time.Second, "kill", "-s", "USR2", "--kill-who=main", pathfindUnit); r.err != nil || r.code != 0 {
		t.Fatalf("%v", r)
	}
	if !waitFor(time.Minute, func() bool { return c.mainPID(t, pathfindUnit) != old }) {
		t.Fatalf("MainPID is still %d a minute after SIGUSR2\n%s", old, c.diag(pathfindUnit))
	}
	time.Sleep(3 * time.Second)
	for prop, want := range map[string]string{"ActiveState": "active", "InvocationID": inv, "NRestarts": "0"} {
		if got := c.show(t, pathfindUnit, prop); got != want {
			t.Errorf("%s = %q, want %q: the watchdog fired?\n%s", prop, got, want, c.diag(pathfindUnit))
		}
	}
}
