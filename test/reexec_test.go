package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/test/procwatch"
)

// reexecs is how many re-execs in place TestReexecInPlace does in a row.
const reexecs = 3

// inode is the inode of path's file (or of /proc/PID/exe's target).
func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// reexec sends SIGUSR2 to s, which runs --self-upgrade exec, and waits for
// its new image to serve.
func (s *supervisor) reexec() procwatch.Entry {
	s.t.Helper()
	mark := s.Log.Len()
	if err := s.Signal(syscall.SIGUSR2); err != nil {
		s.t.Fatal(err)
	}
	e, _ := s.waitFor(mark, waitBound, "the new image",
		func(e procwatch.Entry) bool {
			return e.Is("re-exec in place: the new image serves, its workers adopted") ||
				e.Is("re-exec in place refused: this image serves on") || e.Is("re-exec in place failed; this image serves on")
		})
	if !e.Is("re-exec in place: the new image serves, its workers adopted") {
		s.t.Fatalf("re-exec: %s", e.Raw)
	}
	return e
}

// TestReexecInPlace proves SIGUSR2 with --self-upgrade exec: under load in
// both client modes, with no failed request, the supervisor execs the new
// binary at its path in place, reexecs times: the same PID, the same
// workers (adopted, not restarted), the control socket, the metrics socket
// and the PID file kept, /proc/PID/exe the new file. The new image then
// supervises the adopted workers as its own: a kill -9 of one is restarted,
// a SIGHUP drains them and they are reaped.
func TestReexecInPlace(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "supervisor")
	if err := copyFile(bin, supervisorBin, 0o755); err != nil {
		t.Fatal(err)
	}
	control, pidFile := filepath.Join(dir, "control"), filepath.Join(dir, "pid")
	s := startSupervisorFrom(t, bin, supervisorConfig{binary: pathfindV1, flags: goodFlags("--workers", "2",
		"--control", control, "--pid-file", pidFile, "--self-upgrade", "exec", "--metrics-listen", "127.0.0.1:0",
		"--state-dir", filepath.Join(dir, "state"))})
	metrics := "http://" + s.metricsAddr()
	addr := s.waitListening("http")
	first := s.waitReady(1)
	url := pathURL(t, addr)
	loads := startBothModes(t, url)

	for i := range reexecs {
		awaitAll(t, loads)
		if err := copyFile(bin, supervisorBin, 0o755); err != nil { // a new file at the path, by rename
			t.Fatal(err)
		}
		e := s.reexec()
		t.Logf("re-exec %d: %v ms", i+1, e.Int("took_ms"))
		if !s.running() {
			t.Fatalf("the supervisor exited: %v", s.Err())
		}
		if got, want := inode(t, fmt.Sprintf("/proc/%d/exe", s.PID)), inode(t, bin); got != want {
			t.Errorf("re-exec %d: /proc/%d/exe is inode %d, want the new file's %d", i+1, s.PID, got, want)
		}
		if w := s.workers(); !sameSet(w, first.pids) {
			t.Fatalf("re-exec %d: workers %v, want the same %v, adopted", i+1, w, first.pids)
		}
		st := statusOf(t, control)
		if st.PID != s.PID || st.Current == nil || st.Current.Gen != 1 || !sameSet(st.Current.pids(), first.pids) {
			t.Fatalf("re-exec %d: ctl status %+v", i+1, st)
		}
		expectGet(t, metrics+"/readyz", 200, "ok")
		if b, err := os.ReadFile(pidFile); err != nil || string(b) != fmt.Sprintln(s.PID) {
			t.Errorf("re-exec %d: PID file %q (%v), want %d", i+1, b, err, s.PID)
		}
	}
	awaitAll(t, loads)
	for i, run := range loads {
		noFailures(t, fmt.Sprint("load ", i), run.Stop())
	}
	// The history has every image's records: the first start, and one
	// self-upgrade per re-exec, each written by the image that served on.
	var started, reexeced int
	for _, line := range strings.Split(strings.TrimSpace(ctlOK(t, control, "history", "--json").stdout), "\n") {
		switch {
		case strings.Contains(line, `"event":"start"`):
			started++
		case strings.Contains(line, `"event":"self-upgrade"`) && strings.Contains(line, `"result":"ok"`) && strings.Contains(line, "re-exec in place"):
			reexeced++
		}
	}
	if started != 1 || reexeced != reexecs {
		t.Errorf("history: %d start and %d re-exec records, want 1 and %d", started, reexeced, reexecs)
	}

	// The adopted workers are the new image's own: a crash is restarted.
	mark := s.Log.Len()
	victim := first.pids[0]
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	s.waitFor(mark, waitBound, "the crash seen", func(e procwatch.Entry) bool {
		return e.Is("worker exited") && e.Int("pid") == victim
	})
	s.waitFor(mark, waitBound, "the restart", msg("worker restarting", []string{"delay_ms"}))
	restarted, _ := s.waitFor(mark, waitBound, "the restarted worker serving", func(e procwatch.Entry) bool {
		return strings.HasPrefix(e.Raw, "pathfind: version v1, pid ")
	})
	t.Logf("adopted worker %d killed; restarted: %s", victim, restarted.Raw)

	// And a SIGHUP drains them: their exits are reaped and seen.
	s.install(pathfindV2, 0o755)
	u := s.hup()
	if !u.OK {
		t.Fatalf("SIGHUP after the re-execs: %+v", u)
	}
	s.waitDrained(u.Start, 1)
	probe(t, url)
	checkNoZombies(t, s)
}

// TestReexecBrokenBinaryRefused: a binary at the supervisor's path that is
// not a supervisor, or cannot be run, fails the check before anything is
// touched; the supervisor serves on, same image, same workers, under load
// with no failed request; a good build then re-executes.
func TestReexecBrokenBinaryRefused(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "supervisor")
	if err := copyFile(bin, supervisorBin, 0o755); err != nil {
		t.Fatal(err)
	}
	s := startSupervisorFrom(t, bin, supervisorConfig{binary: pathfindV1,
		env: []string{helperEnv + "=exit"}, flags: goodFlags("--self-upgrade", "exec")})
	addr := s.waitListening("http")
	first := s.waitReady(1)
	loads := startBothModes(t, pathURL(t, addr))
	exe := inode(t, fmt.Sprintf("/proc/%d/exe", s.PID))
	for _, b := range []struct {
		name, src string
		mode      os.FileMode
	}{
		{"exits at once", helperBin, 0o755},
		{"is not executable", supervisorBin, 0o644},
		{"is another program", pathfindV1, 0o755},
	} {
		awaitAll(t, loads)
		if err := copyFile(bin, b.src, b.mode); err != nil {
			t.Fatal(err)
		}
		mark := s.Log.Len()
		if err := s.Signal(syscall.SIGUSR2); err != nil {
			t.Fatal(err)
		}
		e, _ := s.waitFor(mark, waitBound, "the refusal", msg("re-exec in place refused: this image serves on", []string{"reason"}))
		t.Logf("a binary that %s: %s", b.name, e.Str("reason"))
		if got := inode(t, fmt.Sprintf("/proc/%d/exe", s.PID)); got != exe || !s.running() {
			t.Fatalf("after a binary that %s: the supervisor runs inode %d (was %d), running %v", b.name, got, exe, s.running())
		}
		if w := s.workers(); !sameSet(w, first.pids) {
			t.Fatalf("after a binary that %s: workers %v, want %v", b.name, w, first.pids)
		}
	}
	if err := copyFile(bin, supervisorBin, 0o755); err != nil {
		t.Fatal(err)
	}
	s.reexec()
	awaitAll(t, loads)
	for i, run := range loads {
		noFailures(t, fmt.Sprint("load ", i), run.Stop())
	}
}

// TestReexecAsPID1 proves SIGUSR2 as PID 1 (a container's entrypoint; here
// `unshare --pid --fork`): the supervisor re-executes in place whatever
// --self-upgrade says, since a successor's fork and exit would end the
// namespace; it serves on under load with no failed request, and a SIGTERM
// then drains and ends it with status 0.
func TestReexecAsPID1(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root for a PID namespace")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("no unshare(1): ", err)
	}
	needBinaries(t)
	dir := t.TempDir()
	worker := filepath.Join(dir, "worker")
	if err := copyFile(worker, pathfindV1, 0o755); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--pid", "--fork", "--kill-child", "--mount-proc", supervisorBin, "--log-format", "json",
		"--listen", "http=tcp://127.0.0.1:0"}, goodFlags("--self-upgrade", "fork", "--", worker)...)
	p, err := procwatch.Start("supervisor", exec.Command(unshare, args...))
	if err != nil {
		t.Fatal(err)
	}
	s := &procwatch.Supervisor{Proc: p}
	var sup int // the supervisor's PID on the host; 1 inside
	t.Cleanup(func() {
		if sup != 0 {
			syscall.Kill(sup, syscall.SIGTERM)
		}
		if err := p.Stop(stopBound); err != nil {
			t.Error(err)
		}
		p.CloseOutput()
		if t.Failed() {
			t.Logf("output:\n%s", p.Log.Tail(60))
		}
	})
	started, _, err := p.Find(0, waitBound, "the start", func(e procwatch.Entry) bool { return e.Is("supervisor started") })
	if err != nil {
		t.Fatal(err)
	}
	if started.Int("pid") != 1 {
		t.Fatalf("the supervisor is pid %d in its namespace, want 1", started.Int("pid"))
	}
	if kids := procwatch.ChildPIDs(p.PID); len(kids) == 1 {
		sup = kids[0]
	} else {
		t.Fatalf("unshare %d has children %v, want the supervisor", p.PID, kids)
	}
	addr, err := s.WaitListening("http", waitBound)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.WaitReady(1, waitBound); err != nil {
		t.Fatal(err)
	}
	loads := startBothModes(t, pathURL(t, addr))
	awaitAll(t, loads)
	mark := p.Log.Len()
	if err := syscall.Kill(sup, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.Find(mark, waitBound, "the new image", func(e procwatch.Entry) bool {
		return e.Is("re-exec in place: the new image serves, its workers adopted")
	}); err != nil {
		t.Fatal(err)
	}
	awaitAll(t, loads)
	for i, run := range loads {
		noFailures(t, fmt.Sprint("load ", i), run.Stop())
	}
	if err := syscall.Kill(sup, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(stopBound):
		t.Fatalf("the namespace's PID 1 did not end within %v of SIGTERM", stopBound)
	}
	sup = 0
	if p.Err() != nil {
		t.Errorf("unshare exited with %v, want 0 (the supervisor drained and exited 0)", p.Err())
	}
	if _, _, err := p.Find(mark, waitBound, "the drain", func(e procwatch.Entry) bool { return e.Is("stopped") }); err != nil {
		t.Errorf("no \"stopped\" line: %v", err)
	}
}

// TestReexecFallsBack: a new binary that passes its check but cannot take
// the state over after the exec (here a build whose preflight fails) does
// not take the workers down with it: it executes the previous binary again,
// held open across the exec, with the same state, which serves on under
// load with no failed request, same PID, same workers, and records the
// self-upgrade as failed, with why.
func TestReexecFallsBack(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "supervisor")
	if err := copyFile(bin, supervisorBin, 0o755); err != nil {
		t.Fatal(err)
	}
	s := startSupervisorFrom(t, bin, supervisorConfig{binary: pathfindV1, flags: goodFlags("--workers", "2", "--self-upgrade", "exec")})
	addr := s.waitListening("http")
	first := s.waitReady(1)
	loads := startBothModes(t, pathURL(t, addr))
	original := inode(t, bin)
	if err := copyFile(bin, supervisorFailpoint, 0o755); err != nil {
		t.Fatal(err)
	}
	awaitAll(t, loads)
	mark := s.Log.Len()
	if err := s.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	// The previous binary, executed again, serves on and records a failure.
	e, _ := s.waitFor(mark, waitBound, "the fallback's outcome", msg("re-exec in place failed: the previous binary serves on, its workers adopted", []string{"reason"}))
	if e.Str("result") != "failed" || e.Str("kind") != "start-failed" || !strings.Contains(e.Str("reason"), "cannot take the state over") {
		t.Errorf("the fallback's outcome: %s", e.Raw)
	}
	if _, _, err := s.Log.Find(mark, 0, "the fallback", func(e procwatch.Entry) bool {
		return e.Is("re-exec in place: executing the previous binary again with the state")
	}); err != nil {
		t.Fatalf("no fallback: %v", err)
	}
	if got := inode(t, fmt.Sprintf("/proc/%d/exe", s.PID)); got != original {
		t.Errorf("after the fallback the supervisor runs inode %d, want the previous binary's %d", got, original)
	}
	if w := s.workers(); !sameSet(w, first.pids) || !s.running() {
		t.Fatalf("after the fallback: workers %v (want %v), running %v", w, first.pids, s.running())
	}
	awaitAll(t, loads)
	for i, run := range loads {
		noFailures(t, fmt.Sprint("load ", i), run.Stop())
	}
}

// TestReexecRefusedWithoutRuntimeDir: when the runtime directory, where the
// workers' notify socket lives, is gone (a tmp cleaner), the exec is not
// tried (the quiesce's marker cannot reach the socket; the new image could
// not serve the workers either); this one serves on.
func TestReexecRefusedWithoutRuntimeDir(t *testing.T) {
	runtimeDir := filepath.Join(t.TempDir(), "run")
	s := startSupervisor(t, supervisorConfig{binary: pathfindV1,
		flags: goodFlags("--self-upgrade", "exec", "--runtime-dir", runtimeDir)})
	addr := s.waitListening("http")
	first := s.waitReady(1)
	if err := os.RemoveAll(runtimeDir); err != nil {
		t.Fatal(err)
	}
	mark := s.Log.Len()
	if err := s.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	e, _ := s.waitFor(mark, waitBound, "the refusal", msg("re-exec in place refused: this image serves on", []string{"reason"}))
	if !strings.Contains(e.Str("reason"), "notify") || e.Str("kind") != "refused" {
		t.Errorf("re-exec without the runtime directory: %s", e.Raw)
	}
	if w := s.workers(); !sameSet(w, first.pids) || !s.running() {
		t.Fatalf("after the refused exec: workers %v (want %v), running %v", w, first.pids, s.running())
	}
	probe(t, pathURL(t, addr))
}
