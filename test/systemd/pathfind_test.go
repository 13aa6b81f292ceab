package systemd_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/procswitch/supervisor/test/procwatch"
)

const (
	pathfindUnit = "pathfind.service"
	pathfindURL  = "http://127.0.0.1:8080"
	pathfindCtl  = "/run/pathfind/control" // RuntimeDirectory=pathfind
)

// TestStart: `systemctl enable --now` starts the supervisor, which serves,
// and every process of the unit runs in the sandbox the unit asks for.
func TestStart(t *testing.T) {
	c := need(t)
	t.Cleanup(func() { c.systemctl(30*time.Second, "disable", pathfindUnit) })
	t.Cleanup(func() { stopUnit(t, c, pathfindUnit) })
	t0 := time.Now()
	if r := c.systemctl(startBound, "enable", "--now", pathfindUnit); r.err != nil || r.code != 0 {
		t.Fatalf("%v\n%s", r, c.diag(pathfindUnit))
	}
	t.Logf("systemctl enable --now: %v (returns once the supervisor said READY=1)", time.Since(t0).Round(time.Millisecond))
	for prop, want := range map[string]string{"ActiveState": "active", "SubState": "running", "UnitFileState": "enabled", "Type": "notify"} {
		if got := c.show(t, pathfindUnit, prop); got != want {
			t.Errorf("%s = %q, want %q", prop, got, want)
		}
	}
	load, s := c.startLoad(t, pathfindURL)
	main := c.mainPID(t, pathfindUnit)

	for _, p := range []struct {
		what string
		pid  int
	}{{"supervisor", main}, {"worker", s.PID}} {
		st := c.procStatus(t, p.pid)
		uid := strings.Fields(st["Uid"])
		switch {
		case len(uid) == 0 || uid[0] == "0":
			t.Errorf("%s %d runs as uid %q: DynamicUser= did not apply", p.what, p.pid, st["Uid"])
		case st["NoNewPrivs"] != "1":
			t.Errorf("%s %d: NoNewPrivs %q, want 1", p.what, p.pid, st["NoNewPrivs"])
		case st["Seccomp"] != "2":
			t.Errorf("%s %d: Seccomp %q, want 2 (a filter: SystemCallFilter=)", p.what, p.pid, st["Seccomp"])
		case st["CapEff"] != "0000000000000000" || st["CapBnd"] != "0000000000000000":
			t.Errorf("%s %d: CapEff %s CapBnd %s, want none (CapabilityBoundingSet=)", p.what, p.pid, st["CapEff"], st["CapBnd"])
		}
	}
	if st := c.procStatus(t, s.PID); st["PPid"] != fmt.Sprint(main) {
		t.Errorf("worker %d has parent %s, want the supervisor %d", s.PID, st["PPid"], main)
	}
	mounts := c.must(t, 30*time.Second, "cat", fmt.Sprintf("/proc/%d/mountinfo", main))
	if opts := mountOptions(mounts, "/"); !slices.Contains(opts, "ro") {
		t.Errorf("/ is mounted %v for the supervisor, want ro (ProtectSystem=strict)", opts)
	}
	for _, dir := range []string{"/tmp", "/home", "/var/lib/private/pathfind", "/run/pathfind"} {
		if mountOptions(mounts, dir) == nil {
			t.Errorf("no mount at %s in the supervisor's namespace (PrivateTmp=, ProtectHome=, StateDirectory=, RuntimeDirectory=)", dir)
		}
	}
	status := c.show(t, pathfindUnit, "StatusText")
	t.Logf("StatusText: %s", status)
	if status == "" {
		t.Errorf("no STATUS= from the supervisor (systemctl show -p StatusText is empty)")
	}
	out := c.must(t, 30*time.Second, prefix+"/supervisor", "ctl", "--control", pathfindCtl, "status", "--json")
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Errorf("supervisor ctl status --json: %v in %q", err, out)
	}
	t.Logf("ctl status --json: %s", strings.TrimSpace(out))

	if res := finishLoad(t, load); res.Failed != 0 || res.Requests == 0 {
		t.Errorf("load: %v", res)
	}
}

// mountOptions returns the options of the topmost mount at dir in a
// /proc/PID/mountinfo, nil when nothing is mounted there.
func mountOptions(mountinfo, dir string) []string {
	var opts []string
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && f[4] == dir {
			opts = strings.Split(f[5], ",")
		}
	}
	return opts
}

// TestReloadUnderLoad: 10 × systemctl reload, alternating two builds, with
// clients that never retry: every reload exits 0 once the new generation
// serves, and no request fails.
func TestReloadUnderLoad(t *testing.T) {
	c := need(t)
	startUnit(t, c, pathfindUnit)
	main := c.mainPID(t, pathfindUnit)
	load, _ := c.startLoad(t, pathfindURL)
	var took []time.Duration
	for i := 1; i <= 10; i++ {
		b := pathfindV1
		if i%2 == 1 {
			b = pathfindV2
		}
		builds.installT(t, "pathfind", b)
		t0 := time.Now()
		r := c.systemctl(reloadBound, "reload", pathfindUnit)
		took = append(took, time.Since(t0).Round(time.Millisecond))
		if r.err != nil || r.code != 0 {
			t.Fatalf("reload %d: %v\n%s", i, r, c.diag(pathfindUnit))
		}
		if st := c.show(t, pathfindUnit, "ActiveState"); st != "active" {
			t.Fatalf("after reload %d: ActiveState %q\n%s", i, st, c.diag(pathfindUnit))
		}
	}
	t.Logf("systemctl reload took %v", took)
	if got := c.mainPID(t, pathfindUnit); got != main {
		t.Errorf("MainPID changed from %d to %d: a reload must not restart the supervisor", main, got)
	}
	res := finishLoad(t, load)
	if res.Failed != 0 || res.Requests == 0 {
		t.Errorf("load under 10 reloads: %v", res)
	}
	if res.Versions["v1"] == 0 || res.Versions["v2"] == 0 {
		t.Errorf("answers by version %v: want both builds to have served", res.Versions)
	}
	ups := c.awaitJournal(t, pathfindUnit, 10, 10*time.Second, func(e procwatch.Entry) bool {
		return e.Is("upgrade succeeded", "pids", "ready_ms") && (hasField(e, "gen") || hasField(e, "generation"))
	})
	if len(ups) != 10 {
		t.Errorf("journalctl -u %s: %d \"upgrade succeeded\" lines with gen, pids and ready_ms, want 10", pathfindUnit, len(ups))
	} else {
		t.Logf("journal: %s", ups[9].Raw)
	}
}

func hasField(e procwatch.Entry, key string) bool {
	_, ok := e.Fields[key]
	return ok
}

// TestReloadBrokenBuild: with a broken build at the worker's path,
// systemctl reload exits non-zero, the old generation keeps serving (no
// request fails, the unit stays active, the supervisor keeps its PID), and
// systemctl status and the journal say why. A good build then reloads.
func TestReloadBrokenBuild(t *testing.T) {
	c := need(t)
	startUnit(t, c, pathfindUnit)
	main := c.mainPID(t, pathfindUnit)
	load, s := c.startLoad(t, pathfindURL)
	for i, broken := range []string{brokenExits, brokenNoExec} {
		builds.installT(t, "pathfind", broken)
		r := c.systemctl(reloadBound, "reload", pathfindUnit)
		if r.err != nil || r.code == 0 {
			t.Fatalf("reload with %s: %v, want a non-zero exit\n%s", broken, r, c.diag(pathfindUnit))
		}
		t.Logf("reload with %s: exit %d: %s", broken, r.code, strings.TrimSpace(r.stderr))
		if st := c.show(t, pathfindUnit, "ActiveState"); st != "active" {
			t.Errorf("%s: ActiveState %q after the failed reload, want active", broken, st)
		}
		if got := c.mainPID(t, pathfindUnit); got != main {
			t.Errorf("%s: MainPID %d, want %d", broken, got, main)
		}
		status := c.systemctl(30*time.Second, "status", "--no-pager", "-l", pathfindUnit)
		line := statusLine(status.stdout)
		t.Logf("systemctl status: %s", line)
		if !strings.Contains(strings.ToLower(line), "fail") {
			t.Errorf("%s: systemctl status has no Status: line saying the upgrade failed:\n%s", broken, status.stdout)
		}
		failed := c.awaitJournal(t, pathfindUnit, i+1, 10*time.Second, func(e procwatch.Entry) bool {
			return e.Is("upgrade failed", "reason")
		})
		if len(failed) != i+1 {
			t.Errorf("%s: %d \"upgrade failed\" lines with a reason in the journal, want %d\n%s", broken, len(failed), i+1, c.diag(pathfindUnit))
		} else {
			t.Logf("journal: %s", failed[i].Raw)
		}
	}
	// Still the first generation's worker, then a good build upgrades.
	res := finishLoad(t, load)
	if res.Failed != 0 || res.Requests == 0 {
		t.Errorf("load during the failed reloads: %v", res)
	}
	if len(res.ByPID) != 1 || res.ByPID[fmt.Sprint(s.PID)] == 0 {
		t.Errorf("answered by %v, want only the first worker %d", res.ByPID, s.PID)
	}
	builds.installT(t, "pathfind", pathfindV2)
	if r := c.systemctl(reloadBound, "reload", pathfindUnit); r.err != nil || r.code != 0 {
		t.Fatalf("reload with a good build after the failures: %v\n%s", r, c.diag(pathfindUnit))
	}
}

// statusLine is the "Status:" line of systemctl status (the supervisor's
// STATUS=).
func statusLine(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if l := strings.TrimSpace(line); strings.HasPrefix(l, "Status:") {
			return l
		}
	}
	return ""
}

// TestStopDrains: systemctl stop under load drains. The load's requests
// begun before the stop all succeed, those in flight at the stop included;
// the supervisor exits 0 well within TimeoutStopSec (no SIGKILL).
func TestStopDrains(t *testing.T) {
	c := need(t)
	startUnit(t, c, pathfindUnit)
	inv := c.show(t, pathfindUnit, "InvocationID")
	load, _ := c.startLoad(t, pathfindURL)
	time.Sleep(500 * time.Millisecond) // some load on the worker
	load.send(t, "mark")
	load.event(t, "mark", 30*time.Second, nil)
	t0 := time.Now()
	if r := c.systemctl(stopBound, "stop", pathfindUnit); r.err != nil || r.code != 0 {
		t.Fatalf("%v\n%s", r, c.diag(pathfindUnit))
	}
	took := time.Since(t0)
	t.Logf("systemctl stop: %v", took.Round(time.Millisecond))
	if got := c.show(t, pathfindUnit, "ActiveState"); got != "inactive" {
		t.Errorf("after stop: ActiveState %q, want inactive", got)
	}
	c.stoppedCleanly(t, pathfindUnit, inv)
	res := finishLoad(t, load)
	t.Logf("requests begun before the stop: %d, of which in flight when it began: %d, failed: %d",
		res.BeforeMark, res.InFlightAtMark, res.BeforeMarkFailed)
	if res.BeforeMark == 0 || res.BeforeMarkFailed != 0 {
		t.Errorf("load before the stop: %v", res)
	}
	if res.InFlightAtMark == 0 {
		t.Errorf("no request was in flight when the stop began: nothing shows the drain")
	}
	if res.FirstFailureAfterMarkMS != nil {
		t.Logf("the first failure (a request begun after the stop, the service going away) began %.1f ms after it", *res.FirstFailureAfterMarkMS)
	}
	if !slices.ContainsFunc(c.journalOf(t, inv), func(e procwatch.Entry) bool { return e.Is("stopped") }) {
		t.Errorf("the supervisor did not log \"stopped\"\n%s", c.diag(pathfindUnit))
	}
}
