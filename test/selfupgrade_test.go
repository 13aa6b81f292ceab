package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	engine "github.com/procswitch/supervisor/internal/supervisor"
	"github.com/procswitch/supervisor/test/procwatch"
)

// Sizes and bounds of the self-upgrade tests.
const (
	selfUpgrades = 3 // SIGUSR2s in sequence under load
	// usr2Tries bounds the SIGUSR2s sent to a new supervisor that refuses
	// the first because it has not yet seen its predecessor exit: nothing
	// it logs or sends tells when it has (see chain.usr2).
	usr2Tries = 5
)

// chain follows a supervisor through its self-upgrades (SIGUSR2). Each
// successor is started by the supervisor it replaces, shares its output
// pipe, and is re-parented to the test process (a subreaper) when that one
// exits: the harness's supervisor follows only the first.
type chain struct {
	*supervisor // the first, started by the harness; its t is the test's
	control     string
	pidFile     string
	notify      *notifyRecorder // nil when the test gave none
	url         string          // a URL every worker answers

	pid     int                  // the supervisor in charge
	watch   *procwatch.ExitWatch // its exit; nil while it is the first
	cur     generation           // its current generation
	last    int                  // the highest generation number used so far
	stopped bool
}

// newChain starts following s, whose first generation is first. It stops the
// supervisor in charge at the end of the test, before the harness checks
// for leftover processes.
func newChain(t *testing.T, s *supervisor, first generation, control, pidFile string, notify *notifyRecorder) *chain {
	c := &chain{supervisor: s, control: control, pidFile: pidFile, notify: notify,
		pid: s.PID, cur: first, last: first.gen}
	t.Cleanup(c.cleanup)
	return c
}

// find waits for the first line from index from on that match accepts,
// whichever supervisor of the chain wrote it.
func (c *chain) find(from int, what string, match func(procwatch.Entry) bool) (procwatch.Entry, int) {
	c.t.Helper()
	e, i, err := c.Log.Find(from, waitBound, what, match)
	if err != nil {
		c.t.Fatal(err)
	}
	return e, i
}

// waitExit waits for the supervisor pid, the first or a successor the
// watch follows, to exit, and checks it exited 0.
func (c *chain) waitExit(pid int, watch *procwatch.ExitWatch) {
	c.t.Helper()
	if watch == nil {
		select {
		case <-c.Done():
		case <-time.After(stopBound):
			c.t.Fatalf("supervisor %d did not exit within %v", pid, stopBound)
		}
		if c.Err() != nil {
			c.t.Errorf("supervisor %d exited with %v, want 0", pid, c.Err())
		}
		return
	}
	ws, err := watch.WaitStatus(stopBound)
	watch.Close()
	if err != nil {
		c.t.Fatal(err)
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		c.t.Errorf("supervisor %d: %v, want exit status 0", pid, ws)
	}
}

// usr2 upgrades the supervisor in charge with SIGUSR2 and checks the
// hand-over: the successor starts the next generation, takes over (PID file,
// MAINPID=, the control socket), its workers serve, and the old supervisor
// drains its own and exits 0.
func (c *chain) usr2() {
	t := c.t
	t.Helper()
	old, oldGen := c.pid, c.cur
	nmark := 0
	if c.notify != nil {
		nmark = c.notify.len()
	}
	mark := c.Log.Len()
	start := -1
	for try := 1; start < 0; try++ {
		if err := syscall.Kill(old, syscall.SIGUSR2); err != nil {
			t.Fatal(err)
		}
		e, i := c.find(mark, "self-upgrade started or failed", func(e procwatch.Entry) bool {
			return e.Is("self-upgrade started") || e.Is("self-upgrade failed")
		})
		mark = i + 1
		if e.Is("self-upgrade started") {
			start = i
			break
		}
		// A supervisor that took over refuses SIGUSR2 until it has seen its
		// predecessor exit, which it does just after the test has.
		reason := e.Str("reason")
		if try < usr2Tries && e.Str("kind") == string(engine.KindRefused) {
			t.Logf("SIGUSR2 %d to %d refused: %s", try, old, reason)
			continue
		}
		t.Fatalf("self-upgrade of supervisor %d failed: %s", old, reason)
	}
	e, i := c.find(start, "the new supervisor's start", msg("supervisor started", []string{"pid", "replacing_pid"},
		func(e procwatch.Entry) bool { return e.Int("replacing_pid") == old }))
	next := e.Int("pid")
	watch, err := procwatch.WatchExit(next)
	if err != nil {
		t.Fatal(err)
	}
	ready, _ := c.find(i, "the new supervisor's generation ready", msg("generation ready", []string{"gen", "pids"}))
	gen := generation{gen: ready.Int("gen"), pids: ready.Ints("pids")}
	if gen.gen != c.last+1 {
		t.Errorf("the new supervisor's first generation is %d, want %d: numbers go on from the old supervisor's last, %d", gen.gen, c.last+1, c.last)
	}
	c.find(i, "the new supervisor taking over", msg("self-upgrade: this supervisor is ready and takes over", []string{"pid"},
		func(e procwatch.Entry) bool { return e.Int("pid") == next }))
	c.find(start, "self-upgrade succeeded", func(e procwatch.Entry) bool {
		return e.Fields != nil && strings.HasPrefix(e.Msg(), "self-upgrade succeeded") && e.Str("result") == "ok"
	})
	c.find(start, fmt.Sprintf("generation %d drained", oldGen.gen), msg("generation drained", []string{"gen"}, genIs(oldGen.gen)))
	c.find(start, "the old supervisor's stop", msg("stopped: the successor supervisor serves", nil))
	oldWatch := c.watch
	c.pid, c.watch, c.cur, c.last = next, watch, gen, gen.gen
	c.waitExit(old, oldWatch)
	t.Logf("supervisor %d (generation %d %v) replaced %d (generation %d %v)", next, gen.gen, gen.pids, old, oldGen.gen, oldGen.pids)

	// The successor has taken over.
	if b, err := os.ReadFile(c.pidFile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(next) {
		t.Errorf("pid file: %q, %v; want the new supervisor's %d", b, err, next)
	}
	if c.notify != nil {
		m, _ := c.notify.want(t, nmark, "MAINPID= of the new supervisor", has("MAINPID="+strconv.Itoa(next)))
		if m.PID != next || !m.has("READY=1") {
			t.Errorf("MAINPID= notification %v, want it with READY=1, from %d", m, next)
		}
	}
	st := statusOf(t, c.control)
	if st.PID != next || st.Current.Gen != gen.gen || !sameSet(st.Current.pids(), gen.pids) {
		t.Errorf("ctl status answered by pid %d, generation %d %v; want the new supervisor %d, generation %d %v",
			st.PID, st.Current.Gen, st.Current.pids(), next, gen.gen, gen.pids)
	}
	if w := procwatch.ChildPIDs(next); !sameSet(w, gen.pids) {
		t.Errorf("the new supervisor's children %v, want its workers %v", w, gen.pids)
	}
	if rec := probe(t, c.url); !contains(gen.pids, rec.PID) {
		t.Errorf("answered by pid %d, want one of the new supervisor's workers %v", rec.PID, gen.pids)
	}
}

// hup upgrades the workers of the supervisor in charge with SIGHUP and
// returns the outcome; a success replaces its current generation.
func (c *chain) hup() procwatch.Upgrade {
	t := c.t
	t.Helper()
	mark := c.Log.Len()
	if err := syscall.Kill(c.pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	_, i := c.find(mark, "upgrade started", msg("upgrade started", []string{"gen"}))
	e, _ := c.find(i, "the upgrade's outcome", func(e procwatch.Entry) bool {
		return e.Is("upgrade succeeded", "gen") || e.Is("upgrade failed", "gen")
	})
	u := procwatch.Upgrade{OK: e.Msg() == "upgrade succeeded", Gen: e.Int("gen"), OldGen: e.Int("old_gen"),
		PIDs: e.Ints("pids"), Reason: e.Str("reason"), Start: i}
	c.last = max(c.last, u.Gen)
	if u.OK {
		c.find(i, fmt.Sprintf("generation %d drained", c.cur.gen), msg("generation drained", []string{"gen"}, genIs(c.cur.gen)))
		c.cur = generation{gen: u.Gen, pids: u.PIDs}
	}
	return u
}

// stop stops the supervisor in charge with SIGTERM and checks that it
// drains and exits 0.
func (c *chain) stop() {
	c.t.Helper()
	mark := c.Log.Len()
	if err := syscall.Kill(c.pid, syscall.SIGTERM); err != nil {
		c.t.Fatal(err)
	}
	c.stopped = true
	c.find(mark, "stopped", msg("stopped", nil))
	c.waitExit(c.pid, c.watch)
	c.watch = nil
}

// cleanup stops a successor still in charge when the test ended early; the
// harness stops the first.
func (c *chain) cleanup() {
	if c.stopped || c.watch == nil {
		return
	}
	defer c.watch.Close()
	syscall.Kill(c.pid, syscall.SIGTERM)
	if _, err := c.watch.WaitStatus(stopBound); err != nil {
		syscall.Kill(c.pid, syscall.SIGKILL)
		c.watch.WaitStatus(stopBound)
	}
}

// TestSelfUpgradeUnderLoad proves that SIGUSR2 upgrades the supervisor
// itself without losing a request: selfUpgrades of them in sequence, each
// once the one before has taken over, under load in both client modes, each
// leaving a new supervisor in charge (PID file, MAINPID=, control socket),
// its workers serving, generation numbers going on, the old supervisor
// exited 0, the --metrics-listen socket passed on; and that the last one
// still upgrades its workers on SIGHUP.
func TestSelfUpgradeUnderLoad(t *testing.T) {
	rec := listenNotify(t)
	dir := t.TempDir()
	control, pidFile := filepath.Join(dir, "control"), filepath.Join(dir, "pid")
	s := startSupervisor(t, supervisorConfig{binary: pathfindV1, env: []string{"NOTIFY_SOCKET=" + rec.path},
		flags: goodFlags("--control", control, "--pid-file", pidFile, "--metrics-listen", "127.0.0.1:0")})
	metrics := "http://" + s.metricsAddr()
	addr := s.waitListening("http")
	first := s.waitReady(1)
	c := newChain(t, s, first, control, pidFile, rec)
	c.url = pathURL(t, addr)
	loads := startBothModes(t, c.url)
	gens := []generation{first}
	for range selfUpgrades {
		awaitAll(t, loads)
		c.usr2()
		gens = append(gens, c.cur)
		// The successor serves the metrics on the socket it inherited.
		awaitSamples(t, metrics+"/metrics", map[string]float64{"supervisor_current_generation": float64(c.cur.gen)})
		expectGet(t, metrics+"/readyz", 200, "ok")
	}
	awaitAll(t, loads)

	// The last supervisor upgrades its workers on SIGHUP.
	s.install(pathfindV2, 0o755)
	u := c.hup()
	if !u.OK || u.Gen != selfUpgrades+2 {
		t.Fatalf("SIGHUP to the last supervisor %d: %+v, want generation %d ready", c.pid, u, selfUpgrades+2)
	}
	gens = append(gens, c.cur)
	if rec := probe(t, c.url); !contains(u.PIDs, rec.PID) || rec.Version != "v2" {
		t.Errorf("after SIGHUP: answered by pid %d version %q, want one of %v, v2", rec.PID, rec.Version, u.PIDs)
	}
	awaitAll(t, loads)

	byPID := map[int]int{}
	for i, run := range loads {
		res := run.Stop()
		noFailures(t, fmt.Sprint("load ", i), res)
		for pid, n := range res.ByPID() {
			byPID[pid] += n
		}
	}
	for _, g := range gens {
		if byPID[g.pids[0]] == 0 {
			t.Errorf("generation %d (pid %d) answered no load request", g.gen, g.pids[0])
		}
	}
	c.stop()
}

// TestSelfUpgradeBrokenBinary proves that a broken supervisor build costs
// nothing: when the binary at the supervisor's path exits at once or cannot
// be executed, SIGUSR2 fails and says why, the old supervisor goes on
// serving under load with no failed request, its PID file and control
// socket unchanged, without a leaked fd; and once a good build is back, a
// SIGUSR2 succeeds.
func TestSelfUpgradeBrokenBinary(t *testing.T) {
	rec := listenNotify(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "supervisor") // ours to replace
	if err := copyFile(bin, supervisorBin, 0o755); err != nil {
		t.Fatal(err)
	}
	control, pidFile := filepath.Join(dir, "control"), filepath.Join(dir, "pid")
	// The test binary installed as the supervisor runs the "exit" helper;
	// pathfind and the real supervisor ignore the variable.
	s := startSupervisorFrom(t, bin, supervisorConfig{binary: pathfindV1,
		env:   []string{"NOTIFY_SOCKET=" + rec.path, helperEnv + "=exit"},
		flags: goodFlags("--control", control, "--pid-file", pidFile)})
	addr := s.waitListening("http")
	first := s.waitReady(1)
	c := newChain(t, s, first, control, pidFile, rec)
	c.url = pathURL(t, addr)
	loads := startBothModes(t, c.url)

	broken := []struct {
		name string
		src  string
		mode os.FileMode
	}{
		{"exits at once", helperBin, 0o755},
		{"is not executable", supervisorBin, 0o644},
	}
	var fds []string
	for _, b := range broken {
		awaitAll(t, loads)
		if err := copyFile(bin, b.src, b.mode); err != nil { // by rename: the running copy is untouched
			t.Fatal(err)
		}
		mark, nmark := s.Log.Len(), rec.len()
		if err := s.Signal(syscall.SIGUSR2); err != nil {
			t.Fatal(err)
		}
		e, _ := s.waitFor(mark, waitBound, "self-upgrade failed", msg("self-upgrade failed: this supervisor goes on serving", []string{"reason"}))
		t.Logf("a supervisor binary that %s: %s", b.name, e.Str("reason"))
		if e.Str("reason") == "" || e.Str("result") != "failed" || e.Str("kind") != string(engine.KindSuccessor) {
			t.Errorf("self-upgrade failed with reason %q, result %q, kind %q; want a reason, failed, %s",
				e.Str("reason"), e.Str("result"), e.Str("kind"), engine.KindSuccessor)
		}
		if !s.running() {
			t.Fatalf("supervisor exited after a failed self-upgrade: %v", s.Err())
		}
		if bs, err := os.ReadFile(pidFile); err != nil || strings.TrimSpace(string(bs)) != strconv.Itoa(s.PID) {
			t.Errorf("pid file after a failed self-upgrade: %q, %v; want %d", bs, err, s.PID)
		}
		m, _ := rec.want(t, nmark, "READY=1 after the failed self-upgrade", has("READY=1"))
		if m.PID != s.PID || !m.has("MAINPID="+strconv.Itoa(s.PID)) || !strings.Contains(m.status(), "self-upgrade FAILED") {
			t.Errorf("notification after the failed self-upgrade: %v; want MAINPID=%d, READY=1 and the failure, from it", m, s.PID)
		}
		st := statusOf(t, control)
		if st.PID != s.PID || st.Current.Gen != 1 || !sameSet(st.Current.pids(), first.pids) {
			t.Errorf("ctl status after a failed self-upgrade: pid %d, generation %d %v; want %d, 1 %v",
				st.PID, st.Current.Gen, st.Current.pids(), s.PID, first.pids)
		}
		if rec := probe(t, c.url); rec.PID != first.pids[0] {
			t.Errorf("answered by pid %d, want the first worker %d", rec.PID, first.pids[0])
		}
		if w := s.workers(); !sameSet(w, first.pids) {
			t.Errorf("supervisor's children %v, want only its worker %v", w, first.pids)
		}
		checkNoZombies(t, s)
		// The first attempt passes the sockets to tableflip once, for the
		// supervisor's life; later ones must add nothing.
		s.quiet(stormQuiet)
		now := lasting(procwatch.FDs(s.PID))
		if fds != nil && len(now) != len(fds) {
			t.Errorf("supervisor holds %d fds after a second failed self-upgrade, %d after the first:\nnow:    %v\nbefore: %v", len(now), len(fds), now, fds)
		}
		fds = now
	}

	// A good build again: the next SIGUSR2 succeeds.
	awaitAll(t, loads)
	if err := copyFile(bin, supervisorBin, 0o755); err != nil {
		t.Fatal(err)
	}
	c.usr2()
	awaitAll(t, loads)
	for i, run := range loads {
		noFailures(t, fmt.Sprint("load ", i), run.Stop())
	}
	c.stop()
}

// TestSelfUpgradeAfterFailedUpgrade proves that the new supervisor numbers
// its generations on from the old one's last, a failed upgrade's included:
// a number in the log names one generation.
func TestSelfUpgradeAfterFailedUpgrade(t *testing.T) {
	dir := t.TempDir()
	control, pidFile := filepath.Join(dir, "control"), filepath.Join(dir, "pid")
	s := startSupervisor(t, supervisorConfig{binary: pathfindV1, flags: goodFlags("--control", control, "--pid-file", pidFile)})
	addr := s.waitListening("http")
	first := s.waitReady(1)
	c := newChain(t, s, first, control, pidFile, nil)
	c.url = "http://" + addr + "/healthz"
	s.install(pathfindV1, 0o644)
	if u := c.hup(); u.OK || u.Gen != 2 {
		t.Fatalf("upgrade to a non-executable worker: %+v, want generation 2 failed", u)
	}
	s.install(pathfindV1, 0o755)
	c.usr2() // checks that the new generation is 3
	c.stop()
}

// TestSelfUpgradeWorkerEnvironment proves that a new supervisor's workers
// are started as the first one's were: their own NOTIFY_SOCKET, none of the
// supervisor's watchdog settings, nothing that one supervisor passed the
// next, exactly stdio and the listener.
func TestSelfUpgradeWorkerEnvironment(t *testing.T) {
	rec := listenNotify(t)
	dir := t.TempDir()
	control, pidFile := filepath.Join(dir, "control"), filepath.Join(dir, "pid")
	s := startSupervisor(t, supervisorConfig{binary: helperBin,
		env:   []string{helperEnv + "=env", "NOTIFY_SOCKET=" + rec.path, "WATCHDOG_USEC=" + strconv.Itoa(watchdogUSec)},
		flags: goodFlags("--control", control, "--pid-file", pidFile)})
	addr := s.waitListening("http")
	first := s.waitReady(1)
	c := newChain(t, s, first, control, pidFile, rec)
	c.url = "http://" + addr + "/"
	checkWorkerEnv(t, fetchEnv(t, addr), rec.path, 1)
	c.usr2()
	r := fetchEnv(t, addr)
	if !contains(c.cur.pids, r.PID) {
		t.Fatalf("report from pid %d, want one of the new supervisor's workers %v", r.PID, c.cur.pids)
	}
	checkWorkerEnv(t, r, rec.path, 1)
	c.stop()
}

// lasting drops from fds (as procwatch.FDs lists them) the pipes beyond
// stdio: tableflip closes a failed successor's pipes on a goroutine of its
// own, after the failure is reported, so they may or may not be there yet.
// What a self-upgrade must not leak are the sockets and files it passes.
func lasting(fds []string) []string {
	var out []string
	for _, f := range fds {
		n, target, _ := strings.Cut(f, "=")
		if strings.HasPrefix(target, "pipe:") && n != "0" && n != "1" && n != "2" {
			continue
		}
		out = append(out, f)
	}
	return out
}
