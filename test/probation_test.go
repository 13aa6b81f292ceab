package test

import (
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/test/loadgen"
	"github.com/procswitch/supervisor/test/procwatch"
)

// Bounds of the probation tests.
const (
	longProbation  = time.Minute            // outlasts every test: the rollback must come from the crash
	shortProbation = 500 * time.Millisecond // ends within the test, on its own
)

// helperCrashOnRequest is a build that passes every check a supervisor can
// make before it takes traffic: it takes the passed listener, says READY=1,
// and drains on SIGTERM. It exits 1 on its first request, as a build whose
// handler crashes on real traffic would.
func helperCrashOnRequest() int {
	ln, err := passedListener(0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper crash-on-request: %v\n", err)
		return 1
	}
	pid := os.Getpid()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(os.Stderr, "helper crash-on-request[%d]: crashing on %s %s\n", pid, r.Method, r.URL)
		os.Exit(1)
	})}
	drain := make(chan os.Signal, 1)
	signal.Notify(drain, syscall.SIGTERM)
	go func() {
		<-drain
		srv.Close()
	}()
	if err := sdNotify("READY=1"); err != nil {
		fmt.Fprintf(os.Stderr, "helper crash-on-request: %v\n", err)
		return 1
	}
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		fmt.Fprintf(os.Stderr, "helper crash-on-request: %v\n", err)
		return 1
	}
	return 0
}

// probationFlags are goodFlags with probation d and debug logs, which say
// each "worker started".
func probationFlags(d time.Duration, extra ...string) []string {
	return goodFlags(append([]string{"--probation", d.String(), "--log-level", "debug"}, extra...)...)
}

// countFrom counts the log entries from index from on that match.
func countFrom(s *supervisor, from int, match func(procwatch.Entry) bool) int {
	n := 0
	for _, e := range s.Log.All()[from:] {
		if match(e) {
			n++
		}
	}
	return n
}

// waitOK waits for the next upgrade (or rollback) from log index from on
// named msg for generation gen, and fails the test on an "upgrade failed"
// for it first.
func (s *supervisor) waitOK(from, gen int, msgText string) (procwatch.Entry, int) {
	s.t.Helper()
	e, i := s.waitFor(from, waitBound, fmt.Sprintf("%q or \"upgrade failed\" for generation %d", msgText, gen), func(e procwatch.Entry) bool {
		return (e.Is(msgText, "gen") || e.Is("upgrade failed", "gen")) && e.Int("gen") == gen
	})
	if e.Msg() != msgText {
		s.t.Fatalf("generation %d: %s", gen, e.Raw)
	}
	return e, i
}

// TestProbationRollback proves probation in overlap mode, under load in both
// client modes: a build that is ready and then crashes on its first request
// is upgraded to (the upgrade succeeds), crashes, and the supervisor rolls
// back by itself, within probation, to the previous binary (the held file,
// although the path names the bad build). The bad build is never started
// again (no crash restart), a SIGHUP with it still at the path is refused
// with the reason, the load loses at most the requests in flight on the
// crashing worker (one per client), the previous version answers after, and
// a fixed build is then taken.
func TestProbationRollback(t *testing.T) {
	s := startSupervisor(t, supervisorConfig{
		binary: pathfindV1,
		env:    []string{helperEnv + "=crash-on-request"}, // pathfind ignores it
		flags:  probationFlags(longProbation),
	})
	addr := s.waitListening("http")
	first := s.waitReady(1)
	url := pathURL(t, addr)
	loads := startBothModes(t, url)
	awaitAll(t, loads)

	s.install(helperBin, 0o755)
	u := s.hup()
	if !u.OK {
		t.Fatalf("upgrade to a build that is ready failed: %s (%s)", u.Reason, u.Kind)
	}
	bad := u.Gen
	onProbation, _ := s.waitFor(u.Start, waitBound, "probation started", msg("probation: a crash or a hang rolls back to the previous binary until it ends", []string{"gen"}, genIs(bad)))
	if onProbation.Int("previous_gen") != first.gen {
		t.Errorf("on probation with previous_gen %d, want %d: %s", onProbation.Int("previous_gen"), first.gen, onProbation.Raw)
	}

	// The load's first request crashes the new worker.
	failed, fi := s.waitFor(u.End, waitBound, "probation failed", msg("probation failed: rolling back to the previous binary", []string{"gen", "reason"}, genIs(bad)))
	if failed.Int("previous_gen") != first.gen || !strings.Contains(failed.Str("reason"), "exited") {
		t.Errorf("probation failed: %s; want previous_gen %d and the exit as the reason", failed.Raw, first.gen)
	}
	started, si := s.waitFor(fi, waitBound, "rollback started", msg("rollback started: the held binary of an earlier generation", []string{"gen"}))
	back := started.Int("gen")
	if started.Str("trigger") != "probation" || started.Int("to_gen") != first.gen {
		t.Errorf("rollback started: %s; want trigger probation to generation %d", started.Raw, first.gen)
	}
	done, _ := s.waitOK(si, back, "rollback succeeded")
	if d := done.Time().Sub(u.At); d >= longProbation {
		t.Errorf("rolled back %v after the upgrade succeeded, beyond the probation of %v", d, longProbation)
	}
	s.waitDrained(si, bad)
	t.Logf("generation %d failed on probation (%s); generation %d rolled back to generation %d's binary %v after the upgrade",
		bad, failed.Str("reason"), back, first.gen, done.Time().Sub(u.At).Round(time.Millisecond))

	// The previous version answers, from the rollback's worker.
	pids := done.Ints("pids")
	if rec := probe(t, url); !contains(pids, rec.PID) || rec.Version != "v1" {
		t.Errorf("after the rollback: answered by pid %d version %q, want generation %d %v, v1", rec.PID, rec.Version, back, pids)
	}
	awaitAll(t, loads)

	// The bad build is still at the path: a SIGHUP is refused, with why.
	mark := s.Log.Len()
	s.must(s.Signal(syscall.SIGHUP))
	refusal, _ := s.waitFor(mark, waitBound, "the refusal", msg("upgrade failed", []string{"reason"}))
	if refusal.Str("kind") != "refused" || !strings.Contains(refusal.Str("reason"), "install a fixed build first") {
		t.Errorf("SIGHUP with the bad build at the path: %s; want it refused with the fix", refusal.Raw)
	}
	t.Logf("refused: %s", refusal.Str("reason"))
	if n := countFrom(s, mark, msg("upgrade started", nil)); n != 0 {
		t.Errorf("%d upgrades started from the bad build", n)
	}
	if rec := probe(t, url); !contains(pids, rec.PID) || rec.Version != "v1" {
		t.Errorf("after the refusal: answered by pid %d version %q, want generation %d %v, v1", rec.PID, rec.Version, back, pids)
	}
	awaitAll(t, loads)

	// Never started again: no worker of the bad generation after its crash,
	// no restart of it.
	if n := countFrom(s, fi, msg("worker started", []string{"gen"}, genIs(bad))); n != 0 {
		t.Errorf("the bad generation %d started %d workers after it failed on probation", bad, n)
	}
	if n := countFrom(s, fi, msg("worker restarting", []string{"gen"}, genIs(bad))); n != 0 {
		t.Errorf("the bad generation %d was crash-restarted %d times", bad, n)
	}
	if w := s.workers(); !sameSet(w, pids) {
		t.Errorf("supervisor's children %v, want only the rollback's %v", w, pids)
	}

	// A fixed build is taken.
	s.install(pathfindV2, 0o755)
	fixed := s.hup()
	if !fixed.OK || fixed.OldGen != back {
		t.Fatalf("upgrade to a fixed build: %+v; want success from generation %d", fixed, back)
	}
	s.waitDrained(fixed.Start, back)
	if rec := probe(t, url); !contains(fixed.PIDs, rec.PID) || rec.Version != "v2" {
		t.Errorf("after the fixed build: answered by pid %d version %q, want %v, v2", rec.PID, rec.Version, fixed.PIDs)
	}
	awaitAll(t, loads)
	checkNoZombies(t, s)

	failures := 0
	for i, run := range loads {
		res := run.Stop()
		t.Logf("load %d: %s; failures %v", i, res.Summary(), res.ByClass())
		for _, r := range res.Errors(5) {
			t.Logf("load %d: failed request at %v: %v: %v", i, r.Start.Format("15:04:05.000"), r.Class, r.Err)
		}
		failures += res.Failed()
		if len(res.Records) == 0 {
			t.Errorf("load %d made no requests", i)
		}
	}
	// Each client has one request in flight at most: the crash fails at most
	// that one, and the next connection waits in the listen queue for the
	// rollback's worker.
	t.Logf("%d requests failed over the crash and the rollback (bound %d, one per client)", failures, loadClients)
	if failures > loadClients {
		t.Errorf("%d requests failed, want at most %d (those in flight on the crashing worker)", failures, loadClients)
	}
}

// TestCrashOutsideProbation proves that without probation (--probation 0),
// or once it ended, a crash of the new build is a plain crash restart of
// the same generation: no rollback, the build is not marked bad, and an
// upgrade from the path is not refused.
func TestCrashOutsideProbation(t *testing.T) {
	tests := []struct {
		name      string
		probation time.Duration
	}{
		{"off", 0},
		{"after it ended", shortProbation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startSupervisor(t, supervisorConfig{
				binary: pathfindV1,
				env:    []string{helperEnv + "=crash-on-request"},
				flags:  probationFlags(tt.probation, "--restart-min", "10ms"),
			})
			addr := s.waitListening("http")
			s.waitReady(1)
			url := "http://" + addr + "/healthz"
			probe(t, url)

			s.install(helperBin, 0o755)
			u := s.hup()
			if !u.OK {
				t.Fatalf("upgrade failed: %s", u.Reason)
			}
			s.waitDrained(u.Start, u.OldGen)
			if tt.probation > 0 {
				e, _ := s.waitFor(u.Start, waitBound, "probation ended", msg("probation ended", []string{"gen"}, genIs(u.Gen)))
				t.Logf("probation ended: %s", e.Str("reason"))
			} else if n := countFrom(s, u.Start, msg("probation: a crash or a hang rolls back to the previous binary until it ends", nil)); n != 0 {
				t.Errorf("on probation with --probation 0")
			}

			mark := s.Log.Len()
			if rec, err := loadgen.Get(url, probeTimeout); err == nil && rec.Class == loadgen.OK {
				t.Fatalf("the crash build answered: %+v", rec)
			}
			exited, _ := s.waitFor(mark, waitBound, "the crash", msg("worker exited", []string{"pid"}, genIs(u.Gen)))
			if exited.Int("pid") != u.PIDs[0] {
				t.Errorf("worker exited: %s; want pid %d", exited.Raw, u.PIDs[0])
			}
			s.waitFor(mark, waitBound, "the restart", msg("worker restarting", nil, genIs(u.Gen)))
			restarted, _ := s.waitFor(mark, waitBound, "the restarted worker", msg("worker started", []string{"pid"}, genIs(u.Gen)))
			s.waitFor(mark, waitBound, "the restarted worker ready", msg("worker ready", []string{"pid"}, genIs(u.Gen),
				func(e procwatch.Entry) bool { return e.Int("pid") == restarted.Int("pid") }))
			for _, m := range []string{"probation failed: rolling back to the previous binary", "rollback started: the held binary of an earlier generation", "upgrade started"} {
				if n := countFrom(s, mark, msg(m, nil)); n != 0 {
					t.Errorf("%q after a crash outside probation", m)
				}
			}

			// Not marked: the same build at the path is upgraded to.
			again := s.hup()
			if !again.OK {
				t.Errorf("upgrade from the same build after a plain crash: %s (%s); want it tried, not refused", again.Reason, again.Kind)
			}
			t.Logf("worker %d crashed; restarted as %d in generation %d; the next upgrade: ok=%v", u.PIDs[0], restarted.Int("pid"), u.Gen, again.OK)
		})
	}
}

// TestProbationRollbackOtherWorkerCrashes: with two workers, the bad
// generation's other worker that also crashes while the rollback starts is
// not crash-restarted either: the bad binary is never started again.
func TestProbationRollbackOtherWorkerCrashes(t *testing.T) {
	s := startSupervisor(t, supervisorConfig{
		binary: pathfindV1,
		env:    []string{helperEnv + "=crash-on-request"},
		flags:  probationFlags(longProbation, "--workers", "2", "--restart-min", "10ms"),
	})
	addr := s.waitListening("http")
	s.waitReady(1)
	url := "http://" + addr + "/healthz"
	probe(t, url)

	s.install(helperBin, 0o755)
	u := s.hup()
	if !u.OK || len(u.PIDs) != 2 {
		t.Fatalf("upgrade: %+v; want success with two workers", u)
	}
	s.waitDrained(u.Start, u.OldGen)
	mark := s.Log.Len()
	if rec, err := loadgen.Get(url, probeTimeout); err == nil && rec.Class == loadgen.OK {
		t.Fatalf("the crash build answered: %+v", rec)
	}
	_, fi := s.waitFor(mark, waitBound, "probation failed", msg("probation failed: rolling back to the previous binary", []string{"gen"}, genIs(u.Gen)))
	exited, _ := s.waitFor(mark, waitBound, "the crash", msg("worker exited", []string{"pid"}, genIs(u.Gen)))
	other := u.PIDs[0]
	if other == exited.Int("pid") {
		other = u.PIDs[1]
	}
	// The other worker crashes too, before the rollback is ready.
	if err := syscall.Kill(other, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	started, si := s.waitFor(fi, waitBound, "rollback started", msg("rollback started: the held binary of an earlier generation", []string{"gen"}))
	done, _ := s.waitOK(si, started.Int("gen"), "rollback succeeded")
	s.waitDrained(fi, u.Gen)
	if n := countFrom(s, fi, msg("worker started", []string{"gen"}, genIs(u.Gen))); n != 0 {
		t.Errorf("the bad generation %d started %d workers after it failed on probation", u.Gen, n)
	}
	if n := countFrom(s, fi, msg("worker restarting", []string{"gen"}, genIs(u.Gen))); n != 0 {
		t.Errorf("the bad generation %d was crash-restarted %d times after it failed on probation", u.Gen, n)
	}
	if rec := probe(t, url); !contains(done.Ints("pids"), rec.PID) || rec.Version != "v1" {
		t.Errorf("after the rollback: answered by pid %d version %q, want %v, v1", rec.PID, rec.Version, done.Ints("pids"))
	}
}

// helperHangOnRequest serves, says READY=1 and pings the watchdog (every
// half WATCHDOG_USEC) until its first request, which hangs it: the handler
// never returns and the pings stop, as a build that deadlocks on real
// traffic would.
func helperHangOnRequest() int {
	ln, err := passedListener(0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper hang-on-request: %v\n", err)
		return 1
	}
	usec, err := strconv.Atoi(os.Getenv("WATCHDOG_USEC"))
	if err != nil || usec <= 0 {
		fmt.Fprintf(os.Stderr, "helper hang-on-request: WATCHDOG_USEC=%q\n", os.Getenv("WATCHDOG_USEC"))
		return 1
	}
	hung := make(chan struct{})
	var once sync.Once
	pid := os.Getpid()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(os.Stderr, "helper hang-on-request[%d]: hanging on %s %s\n", pid, r.Method, r.URL)
		once.Do(func() { close(hung) })
		select {}
	})}
	if err := sdNotify("READY=1"); err != nil {
		fmt.Fprintf(os.Stderr, "helper hang-on-request: %v\n", err)
		return 1
	}
	go func() {
		tick := time.NewTicker(time.Duration(usec) * time.Microsecond / 2)
		for {
			select {
			case <-hung:
				return
			case <-tick.C:
				sdNotify("WATCHDOG=1")
			}
		}
	}()
	fmt.Fprintf(os.Stderr, "helper hang-on-request: %v\n", srv.Serve(ln))
	return 1
}

// TestProbationWatchdogHang: a build that is ready and pings the watchdog,
// then hangs on its first request, is found hung by --watchdog within
// probation, killed, and rolled back to the previous binary by itself.
func TestProbationWatchdogHang(t *testing.T) {
	const watchdog = time.Second
	s := startSupervisor(t, supervisorConfig{
		binary: pathfindV1,
		env:    []string{helperEnv + "=hang-on-request"},
		flags:  probationFlags(longProbation, "--watchdog", watchdog.String()),
	})
	addr := s.waitListening("http")
	first := s.waitReady(1)
	url := "http://" + addr + "/healthz"
	probe(t, url)

	s.install(helperBin, 0o755)
	u := s.hup()
	if !u.OK {
		t.Fatalf("upgrade to a build that is ready failed: %s (%s)", u.Reason, u.Kind)
	}
	s.waitDrained(u.Start, u.OldGen)
	mark := s.Log.Len()
	// The request hangs until the watchdog kills the worker.
	if rec, err := loadgen.Get(url, probeTimeout); err == nil && rec.Class == loadgen.OK {
		t.Fatalf("the hanging build answered: %+v", rec)
	}
	hung, _ := s.waitFor(mark, waitBound, "worker hung", msg("worker hung", []string{"pid"}, genIs(u.Gen)))
	failed, fi := s.waitFor(mark, waitBound, "probation failed", msg("probation failed: rolling back to the previous binary", []string{"reason"}, genIs(u.Gen)))
	if !strings.Contains(failed.Str("reason"), "hung") || failed.Int("previous_gen") != first.gen {
		t.Errorf("probation failed: %s; want the hang as the reason, back to generation %d", failed.Raw, first.gen)
	}
	started, si := s.waitFor(fi, waitBound, "rollback started", msg("rollback started: the held binary of an earlier generation", []string{"gen"}))
	done, _ := s.waitOK(si, started.Int("gen"), "rollback succeeded")
	if rec := probe(t, url); !contains(done.Ints("pids"), rec.PID) || rec.Version != "v1" {
		t.Errorf("after the rollback: answered by pid %d version %q, want %v, v1", rec.PID, rec.Version, done.Ints("pids"))
	}
	silent, _ := hung.Num("silent_ms")
	t.Logf("worker %d hung (silent %.0f ms, --watchdog %v): %s; rolled back in generation %d", hung.Int("pid"), silent, watchdog, failed.Str("reason"), started.Int("gen"))
}
