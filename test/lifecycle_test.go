package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/test/loadgen"
	"github.com/procswitch/supervisor/test/procwatch"
)

// Bounds of the crash and bad-input tests.
const (
	restartMin      = 100 * time.Millisecond // --restart-min after a crash
	restartMax      = time.Minute            // --restart-max after a crash: longer than the test, so the kill waits restartMin (a worker that ran this long is restarted at once)
	loopRestartMin  = 50 * time.Millisecond  // --restart-min in the crash loop
	loopRestartMax  = time.Second            // --restart-max in the crash loop
	crashLoopWindow = 3 * time.Second        // how long the crash loop is watched
	maxLoopRestarts = 12                     // restarts allowed in that window (without back-off: ~50)
	minLoopRestarts = 4                      // restarts watched at least, however slowly a loaded machine starts the worker
	crashLoopBound  = 60 * time.Second       // how long the loop is watched at most for them
	badInputBound   = 15 * time.Second       // for the supervisor to reject bad input
)

// TestCrashRestartUnderLoad proves that a worker killed with SIGKILL is
// restarted while its socket stays open: no client is refused, connections
// that queue meanwhile are served by the restarted worker, and only requests
// the dead worker had in hand fail.
func TestCrashRestartUnderLoad(t *testing.T) {
	s := startSupervisor(t, supervisorConfig{binary: pathfindV1, flags: goodFlags(
		"--restart-min", restartMin.String(), "--restart-max", restartMax.String())})
	addr := s.waitListening("http")
	first := s.waitReady(1)
	url := pathURL(t, addr)
	loads := startBothModes(t, url)
	awaitAll(t, loads)

	mark := s.Log.Len()
	dead := first.pids[0]
	if err := syscall.Kill(dead, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	s.waitFor(mark, waitBound, fmt.Sprintf("worker %d exited", dead), msg("worker exited", []string{"pid"}, func(e procwatch.Entry) bool {
		return e.Int("pid") == dead
	}))
	// No worker runs now: a new connection queues on the open socket until
	// the restarted worker accepts it.
	probed := make(chan loadgen.Record, 1)
	go func() {
		rec, _ := loadgen.Get(url, probeTimeout)
		probed <- rec
	}()
	r, _ := s.waitFor(mark, waitBound, "worker restarting", msg("worker restarting", []string{"delay_ms"}))
	rec := <-probed // bounded by probeTimeout
	if rec.Class != loadgen.OK || rec.PID == dead || rec.PID == 0 {
		t.Fatalf("request sent while no worker ran: %v (%v), pid %d", rec.Class, rec.Err, rec.PID)
	}
	t.Logf("restart delay %vms; a request sent while no worker ran waited %v for pid %d",
		r.Fields["delay_ms"], rec.Latency.Round(time.Millisecond), rec.PID)
	if w := s.workers(); len(w) != 1 || w[0] != rec.PID {
		t.Errorf("supervisor's children %v, want only the restarted worker %d", w, rec.PID)
	}
	awaitAll(t, loads)

	failed, refused, byNew := 0, 0, 0
	for i, run := range loads {
		res := run.Stop()
		t.Logf("load %d: %s", i, res.Summary())
		failed += res.Failed()
		refused += res.ByClass()[loadgen.ConnRefused]
		byNew += res.ByPID()[rec.PID]
	}
	if refused > 0 {
		t.Errorf("%d connections refused while the worker restarted", refused)
	}
	// Each client had at most one request in the killed worker's hands.
	if failed > loadClients {
		t.Errorf("%d requests failed, want at most the %d in flight when the worker died", failed, loadClients)
	}
	if byNew == 0 {
		t.Errorf("the restarted worker %d answered no load request", rec.PID)
	}
}

// TestCrashLoopBacksOff proves that a worker that exits at once is restarted
// with growing delays, so that a crash loop does not spin.
func TestCrashLoopBacksOff(t *testing.T) {
	s := startSupervisor(t, supervisorConfig{
		binary: helperBin, env: []string{helperEnv + "=exit"},
		// Attempts enough to outlast the window: here the loop itself is
		// under test, not giving up on a first start (TestStartGivesUp).
		flags: goodFlags("--restart-min", loopRestartMin.String(), "--restart-max", loopRestartMax.String(),
			"--start-attempts", "1000"),
	})
	began := time.Now()
	end, bound := began.Add(crashLoopWindow), began.Add(crashLoopBound)
	var restarts []procwatch.Entry
	inWindow := 0
	for from := 0; ; {
		until := end
		if len(restarts) < minLoopRestarts {
			until = bound // a loaded machine may take a second to start a -race worker
		}
		e, i, ok := s.find(from, time.Until(until), msg("worker restarting", []string{"delay_ms"}))
		if !ok {
			break
		}
		restarts = append(restarts, e)
		if e.Time().Sub(began) <= crashLoopWindow {
			inWindow++
		}
		from = i + 1
	}
	if !s.running() {
		t.Fatalf("supervisor exited in a crash loop: %v", s.Err())
	}
	var delays []float64
	for _, e := range restarts {
		d, _ := e.Num("delay_ms")
		delays = append(delays, d)
	}
	t.Logf("%d restarts in %v (%d in the first %v), delays (ms) %v", len(restarts), time.Since(began).Round(time.Millisecond),
		inWindow, crashLoopWindow, delays)
	if len(restarts) < minLoopRestarts {
		t.Fatalf("%d restarts in %v, want %d", len(restarts), crashLoopBound, minLoopRestarts)
	}
	if inWindow > maxLoopRestarts {
		t.Errorf("%d restarts in %v, want at most %d: no back-off", inWindow, crashLoopWindow, maxLoopRestarts)
	}
	for i := 1; i < len(delays); i++ {
		if delays[i] < delays[i-1] {
			t.Errorf("restart delay fell from %vms to %vms", delays[i-1], delays[i])
		}
		// The worker cannot crash again before its delay has passed.
		gap := restarts[i].Time().Sub(restarts[i-1].Time())
		if want := time.Duration(delays[i-1]*0.8) * time.Millisecond; gap < want {
			t.Errorf("restart %d came %v after the one before, whose delay was %vms", i, gap, delays[i-1])
		}
	}
	if last, first := delays[len(delays)-1], delays[0]; last < 4*first {
		t.Errorf("delays grew from %vms to only %vms", first, last)
	}
	if max := float64(loopRestartMax / time.Millisecond); delays[len(delays)-1] > max*1.01 {
		t.Errorf("delay %vms exceeds --restart-max %v", delays[len(delays)-1], loopRestartMax)
	}
}

// TestStartGivesUp proves that a first generation that never becomes ready
// is started --start-attempts times, then the supervisor exits non-zero
// with the reason, as a failed `systemctl start` would have it, instead of
// restarting it forever; and that it leaves no worker behind.
func TestStartGivesUp(t *testing.T) {
	const attempts = 3
	s := startSupervisor(t, supervisorConfig{
		binary: helperBin, env: []string{helperEnv + "=exit"},
		flags: goodFlags("--restart-min", loopRestartMin.String(), "--restart-max", loopRestartMin.String(),
			"--start-attempts", fmt.Sprint(attempts)),
	})
	select {
	case <-s.Done():
	case <-time.After(waitBound):
		t.Fatalf("supervisor still running %v after its start: it never gave up", waitBound)
	}
	var ee *exec.ExitError
	if !errors.As(s.Err(), &ee) || ee.ExitCode() <= 0 {
		t.Errorf("supervisor exit: %v, want a non-zero exit status", s.Err())
	}
	s.Log.WaitEOF(stopBound) // every line read: the exit comes before the reader's last lines
	starts := 0
	for _, e := range s.Log.All() {
		if e.Msg() == "worker exited" {
			starts++
		}
	}
	if starts != attempts {
		t.Errorf("%d workers exited, want exactly --start-attempts %d", starts, attempts)
	}
	e, _ := s.waitFor(0, waitBound, "start failed", msg("start failed: giving up", []string{"reason", "attempts"}))
	if r := e.Str("reason"); !strings.Contains(r, "--start-attempts") {
		t.Errorf("reason %q does not say what to do (--start-attempts)", r)
	}
	s.Log.WaitEOF(stopBound)
	if !strings.Contains(s.Log.Tail(3), "did not become ready") {
		t.Errorf("the last lines do not say why the supervisor exited:\n%s", s.Log.Tail(3))
	}
}

// TestWorkerFDs proves that a worker gets exactly stdio and the listed
// sockets, in order, with systemd's environment, in the first generation and
// after an upgrade; and that an fd the supervisor itself inherited from a
// careless parent does not reach the worker either.
func TestWorkerFDs(t *testing.T) {
	for _, leak := range []bool{false, true} {
		name := "clean start"
		if leak {
			name = "supervisor inherited an fd"
		}
		t.Run(name, func(t *testing.T) { testWorkerFDs(t, leak) })
	}
}

func testWorkerFDs(t *testing.T, leak bool) {
	sock := filepath.Join(t.TempDir(), "w.sock")
	cfg := supervisorConfig{
		binary: helperBin, env: []string{helperEnv + "=fds"},
		listen: []string{"http=tcp://127.0.0.1:0", "extra=tcp://[::1]:0", "sock=unix://" + sock},
		flags:  goodFlags(),
	}
	if leak {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		cfg.inherit = []*os.File{r, w}
	}
	s := startSupervisor(t, cfg)
	addrs := []string{s.waitListening("http"), s.waitListening("extra"), s.waitListening("sock")}
	first := s.waitReady(1)
	checkFDs(t, addrs, sock, first.pids[0])

	u := s.hup() // the same build again: nothing may pile up across generations
	if !u.OK {
		t.Fatalf("upgrade failed: %s", u.Reason)
	}
	s.waitDrained(u.Start, first.gen)
	checkFDs(t, addrs, sock, u.PIDs[0])
}

func checkFDs(t *testing.T, addrs []string, sock string, pid int) {
	t.Helper()
	client := &http.Client{Timeout: probeTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + addrs[0] + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r fdReport
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	if r.PID != pid {
		t.Fatalf("report from pid %d, want %d", r.PID, pid)
	}
	var got, inherited []string
	var fds []fdInfo
	for _, f := range r.FDs {
		d := fmt.Sprintf("%d=%s", f.FD, f.Target)
		if f.Addr != "" {
			d += " (" + f.Addr + ")"
		}
		if f.CloseOnExec { // opened by the helper's Go runtime, not inherited
			d += " cloexec"
		} else {
			fds = append(fds, f)
			inherited = append(inherited, d)
		}
		got = append(got, d)
	}
	t.Logf("worker %d fds: %s", pid, strings.Join(got, ", "))
	wantAddr := map[int]string{3: addrs[0], 4: addrs[1], 5: sock}
	if len(fds) != 6 {
		t.Errorf("worker inherited %d fds, want 0-2 and the 3 listeners: %s", len(fds), strings.Join(inherited, ", "))
	}
	for i, f := range fds {
		if f.FD != i {
			t.Errorf("unexpected fd %d (%s)", f.FD, f.Target)
			continue
		}
		if i >= 3 && (!strings.HasPrefix(f.Target, "socket:") || f.Addr != wantAddr[i]) {
			t.Errorf("fd %d is %s at %q, want the listener at %q", i, f.Target, f.Addr, wantAddr[i])
		}
	}
	if r.ListenFDs != "3" || r.ListenFDNames != "http:extra:sock" || r.ListenPID != fmt.Sprint(pid) || r.NotifySocket == "" {
		t.Errorf("LISTEN_FDS=%q LISTEN_FDNAMES=%q LISTEN_PID=%q NOTIFY_SOCKET=%q, want 3, http:extra:sock, %d, a socket",
			r.ListenFDs, r.ListenFDNames, r.ListenPID, r.NotifySocket, pid)
	}
}

// TestSIGTERMStops proves that SIGTERM drains every worker and the supervisor
// then exits 0.
func TestSIGTERMStops(t *testing.T) {
	s := startSupervisor(t, supervisorConfig{binary: pathfindV1, flags: goodFlags("--workers", "2")})
	s.waitListening("http")
	first := s.waitReady(1)
	watches := watchAll(t, first.pids)
	if err := syscall.Kill(s.PID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-time.After(stopBound):
		t.Fatalf("supervisor did not exit within %v of SIGTERM", stopBound)
	}
	if s.Err() != nil {
		t.Errorf("supervisor exited with %v, want 0", s.Err())
	}
	if alive := procwatch.WaitExited(watches, stopBound); len(alive) > 0 {
		t.Errorf("workers %v outlived the supervisor", alive)
	}
	if _, _, ok := s.find(0, waitBound, msg("generation drained", []string{"gen"}, genIs(1))); !ok {
		t.Errorf("no \"generation drained\" for generation 1")
	}
	if _, _, ok := s.find(0, waitBound, msg("stopped", nil)); !ok {
		t.Errorf("no \"stopped\" line")
	}
}

// TestSIGKILLTakesWorkers proves that workers do not outlive a supervisor
// killed with SIGKILL.
func TestSIGKILLTakesWorkers(t *testing.T) {
	s := startSupervisor(t, supervisorConfig{binary: pathfindV1, flags: goodFlags("--workers", "2")})
	s.waitListening("http")
	first := s.waitReady(1)
	watches := watchAll(t, first.pids)
	if err := syscall.Kill(s.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-s.Done() // a killed process is always waited for at once
	if alive := procwatch.WaitExited(watches, stopBound); len(alive) > 0 {
		t.Errorf("workers %v outlived the killed supervisor by %v", alive, stopBound)
	}
}

func watchAll(t *testing.T, pids []int) []*procwatch.ExitWatch {
	t.Helper()
	var ws []*procwatch.ExitWatch
	for _, pid := range pids {
		w, err := procwatch.WatchExit(pid)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Close)
		ws = append(ws, w)
	}
	return ws
}

// TestBadInput proves that bad input gets one clear line and a non-zero exit,
// never a stack trace.
func TestBadInput(t *testing.T) {
	needBinaries(t)
	dir := t.TempDir()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	noexec := filepath.Join(dir, "noexec")
	if err := copyFile(noexec, pathfindV1, 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	free := "tcp://127.0.0.1:0"
	tests := []struct {
		name string
		args []string
		want []string // in the error line, case-insensitive
	}{
		{"unknown flag", []string{"--no-such-flag", "--listen", free, "--", pathfindV1}, []string{"no-such-flag"}},
		{"malformed listen", []string{"--listen", "tcp:/127.0.0.1:80", "--", pathfindV1}, []string{"tcp:/127.0.0.1:80"}},
		{"unknown network", []string{"--listen", "sctp://127.0.0.1:80", "--", pathfindV1}, []string{"sctp"}},
		{"bad port", []string{"--listen", "tcp://127.0.0.1:99999", "--", pathfindV1}, []string{"99999"}},
		{"address in use", []string{"--listen", "tcp://" + busy.Addr().String(), "--", pathfindV1}, []string{busy.Addr().String(), "in use"}},
		{"missing worker", []string{"--listen", free, "--", missing}, []string{missing}},
		{"not executable", []string{"--listen", free, "--", noexec}, []string{noexec}},
		{"no worker", []string{"--listen", free}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stderr, err := runBad(t, tt.args)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() <= 0 {
				t.Errorf("exit: %v, want a non-zero exit status", err)
			}
			out := string(stderr)
			if strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
				t.Errorf("stack trace in the output:\n%s", out)
			}
			lines := errorLines(stderr)
			if len(lines) != 1 {
				t.Fatalf("%d error lines, want 1:\n%s", len(lines), out)
			}
			for _, w := range tt.want {
				if !strings.Contains(strings.ToLower(lines[0]), strings.ToLower(w)) {
					t.Errorf("error line does not mention %q: %s", w, lines[0])
				}
			}
			t.Logf("%s", lines[0])
		})
	}
}

// runBad runs the supervisor on bad input; it must exit on its own.
func runBad(t *testing.T, args []string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), badInputBound)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, supervisorBin, args...)
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Second
	err := procwatch.Run(cmd)
	if cmd.Process == nil {
		t.Fatal(err) // it did not start
	}
	if ctx.Err() != nil {
		t.Errorf("supervisor %v did not exit within %v", args, badInputBound)
	}
	orphans, reapErr := procwatch.ReapOrphans("", stopBound)
	if len(orphans) > 0 {
		t.Errorf("supervisor on bad input left processes %v", orphans)
	}
	if reapErr != nil {
		t.Error(reapErr)
	}
	return stderr.Bytes(), err
}

// errorLines are the lines of out that report an error: plain text, or JSON
// logs at level error or worse.
func errorLines(out []byte) []string {
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.TrimSpace(l) == "" {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			switch m["level"] {
			case "debug", "info", "warn", "trace":
				continue
			}
		}
		lines = append(lines, l)
	}
	return lines
}
