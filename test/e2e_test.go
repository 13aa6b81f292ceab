package test

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/test/loadgen"
	"github.com/procswitch/supervisor/test/procwatch"
)

// Sizes and bounds of the end-to-end tests.
const (
	upgradesPerMode = 20 // upgrades under load, in each client mode
	loadClients     = 4  // concurrent clients, in all, of the load runs of a test
	loadBetween     = 50 // requests each load run makes between two events

	readyTimeout      = 10 * time.Second // --ready-timeout for workers that do become ready
	badReadyTimeout   = time.Second      // --ready-timeout where a worker never becomes ready
	drainTimeout      = 10 * time.Second // --drain-timeout for workers that drain
	shortDrainTimeout = time.Second      // --drain-timeout where a worker ignores the drain signal

	stormSignals = 50                     // SIGHUPs in the storm, within a second:
	stormBursts  = 5                      // in this many bursts,
	stormEvery   = 200 * time.Millisecond // one burst this often,
	stormGap     = time.Millisecond       // signals of a burst this far apart (so that the kernel does not merge them)
	stormQuiet   = time.Second            // no upgrade starting (no log line) for this long ends the storm

	waitBound      = 20 * time.Second // for any one expected log line
	stopBound      = 20 * time.Second // for a supervisor to stop, or processes to exit
	probeTimeout   = 10 * time.Second // for a probe request
	requestTimeout = 10 * time.Second // for each load request
)

// goodFlags are the supervisor flags for a well-behaved worker.
func goodFlags(extra ...string) []string {
	return append([]string{
		"--ready", "notify", "--ready-timeout", readyTimeout.String(),
		"--drain-timeout", drainTimeout.String(),
	}, extra...)
}

// TestUpgradesUnderLoad proves that SIGHUP upgrades lose no request: over
// upgradesPerMode upgrades, alternating a new build and the same build again,
// clients that never retry see no failure, in either client mode, and each
// upgrade leaves a new worker PID (and the new version) answering.
func TestUpgradesUnderLoad(t *testing.T) {
	for _, mode := range []loadgen.Mode{loadgen.NewConn, loadgen.KeepAlive} {
		t.Run(mode.String(), func(t *testing.T) { testUpgradesUnderLoad(t, mode) })
	}
}

func testUpgradesUnderLoad(t *testing.T, mode loadgen.Mode) {
	s := startSupervisor(t, supervisorConfig{binary: pathfindV1, flags: goodFlags()})
	addr := s.waitListening("http")
	cur := s.waitReady(1)
	url := pathURL(t, addr)
	run := startLoad(t, loadgen.Config{URL: url, Mode: mode, Clients: loadClients})

	builds := []struct{ bin, version string }{{pathfindV1, "v1"}, {pathfindV2, "v2"}}
	b := 0
	gens := []generation{cur}
	var readyMS []float64
	for i := 1; i <= upgradesPerMode; i++ {
		awaitLoad(t, run, run.Len()+loadBetween) // served by the current generation
		// A new build, and every other time the same build again.
		if i%2 == 1 {
			b = 1 - b
			s.install(builds[b].bin, 0o755)
		}
		u := s.hup()
		if !u.OK {
			t.Fatalf("upgrade %d to generation %d failed: %s", i, u.Gen, u.Reason)
		}
		if u.OldGen != cur.gen || len(u.PIDs) != 1 || contains(cur.pids, u.PIDs[0]) {
			t.Fatalf("upgrade %d: gen %d pids %v replaced gen %d pids %v; want a new pid replacing gen %d pids %v",
				i, u.Gen, u.PIDs, u.OldGen, u.OldPIDs, cur.gen, cur.pids)
		}
		drained := s.waitDrained(u.Start, cur.gen)
		if killed := drained.Int("killed"); killed != 0 {
			t.Errorf("upgrade %d: generation %d drained with %d killed", i, cur.gen, killed)
		}
		// The old generation is gone: a new connection must reach the new one.
		rec := probe(t, url)
		if rec.PID != u.PIDs[0] || rec.Version != builds[b].version {
			t.Fatalf("upgrade %d: answered by pid %d version %q, want pid %d version %q",
				i, rec.PID, rec.Version, u.PIDs[0], builds[b].version)
		}
		readyMS = append(readyMS, u.ReadyMS)
		cur = generation{gen: u.Gen, pids: u.PIDs}
		gens = append(gens, cur)
	}
	awaitLoad(t, run, run.Len()+loadBetween)
	res := run.Stop()
	noFailures(t, mode.String(), res)
	byPID := res.ByPID()
	for _, g := range gens {
		if byPID[g.pids[0]] == 0 {
			t.Errorf("generation %d (pid %d) answered no load request", g.gen, g.pids[0])
		}
	}
	sort.Float64s(readyMS)
	t.Logf("%d upgrades, ready_ms median %.1f max %.1f", len(readyMS), readyMS[len(readyMS)/2], readyMS[len(readyMS)-1])
}

// awaitAll waits for each load run to make loadBetween more requests.
func awaitAll(t *testing.T, runs []*loadgen.Run) {
	t.Helper()
	for _, run := range runs {
		awaitLoad(t, run, run.Len()+loadBetween)
	}
}

// TestFailedUpgrades proves that a bad new build costs nothing: when the new
// worker exits at once, never becomes ready, or is not executable, the old
// generation keeps serving with no failed request, the supervisor stays up and
// logs the failure with a reason, and the next good upgrade succeeds.
func TestFailedUpgrades(t *testing.T) {
	tests := []struct {
		name   string
		helper string // the helper the test binary runs as the bad worker
		mode   os.FileMode
	}{
		{"exits at once", "exit", 0o755},
		{"never ready", "noready", 0o755},
		{"not executable", "", 0o644},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var env []string
			bad := pathfindV2
			if tt.helper != "" {
				env = []string{helperEnv + "=" + tt.helper} // pathfind ignores it
				bad = helperBin
			}
			s := startSupervisor(t, supervisorConfig{binary: pathfindV1, env: env, flags: []string{
				"--ready", "notify", "--ready-timeout", badReadyTimeout.String(),
				"--drain-timeout", drainTimeout.String(),
			}})
			addr := s.waitListening("http")
			first := s.waitReady(1)
			url := pathURL(t, addr)
			loads := startBothModes(t, url)

			awaitAll(t, loads)
			s.install(bad, tt.mode)
			u := s.hup()
			if u.OK {
				t.Fatalf("upgrade to a worker that %s succeeded", tt.name)
			}
			if u.Reason == "" {
				t.Errorf("upgrade failed without a reason")
			}
			t.Logf("upgrade to generation %d failed: %s", u.Gen, u.Reason)
			if !s.running() {
				t.Fatalf("supervisor exited after a failed upgrade: %v", s.Err())
			}
			if rec := probe(t, url); rec.PID != first.pids[0] || rec.Version != "v1" {
				t.Errorf("after the failed upgrade: answered by pid %d version %q, want the old pid %d v1", rec.PID, rec.Version, first.pids[0])
			}

			awaitAll(t, loads) // still served by the old generation
			s.install(pathfindV2, 0o755)
			good := s.hup()
			if !good.OK || good.Gen <= u.Gen || good.OldGen != first.gen {
				t.Fatalf("next good upgrade: %+v, want success from generation %d", good, first.gen)
			}
			s.waitDrained(good.Start, first.gen)
			if rec := probe(t, url); rec.PID != good.PIDs[0] || rec.Version != "v2" {
				t.Errorf("after the good upgrade: answered by pid %d version %q, want pid %d v2", rec.PID, rec.Version, good.PIDs[0])
			}
			if w := s.workers(); len(w) != 1 || w[0] != good.PIDs[0] {
				t.Errorf("supervisor's children %v, want only the new worker %v", w, good.PIDs)
			}
			checkNoZombies(t, s)
			awaitAll(t, loads)
			for i, run := range loads {
				noFailures(t, fmt.Sprint("load ", i), run.Stop())
			}
		})
	}
}

// TestDrainTimeout proves that a worker that ignores the drain signal is
// killed at the drain timeout.
func TestDrainTimeout(t *testing.T) {
	s := startSupervisor(t, supervisorConfig{
		binary: helperBin, env: []string{helperEnv + "=ignoreterm"},
		flags: []string{"--ready", "notify", "--ready-timeout", readyTimeout.String(), "--drain-timeout", shortDrainTimeout.String()},
	})
	s.waitListening("http")
	first := s.waitReady(1)
	old, err := procwatch.WatchExit(first.pids[0])
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()

	u := s.hup() // the same build again
	if !u.OK {
		t.Fatalf("upgrade failed: %s", u.Reason)
	}
	e := s.waitDrained(u.Start, first.gen)
	elapsed := e.Time().Sub(u.At)
	drainMS, _ := e.Num("drain_ms")
	t.Logf("generation %d drained: killed=%d drain_ms=%.0f, %v after the upgrade succeeded", first.gen, e.Int("killed"), drainMS, elapsed)
	if k := e.Int("killed"); k != 1 {
		t.Errorf("killed=%d, want 1", k)
	}
	lo, hi := shortDrainTimeout*9/10, shortDrainTimeout+2*time.Second
	if d := time.Duration(drainMS * float64(time.Millisecond)); d < lo || d > hi {
		t.Errorf("drain_ms=%.0f, want about the drain timeout %v", drainMS, shortDrainTimeout)
	}
	if elapsed < lo || elapsed > hi {
		t.Errorf("drained %v after the upgrade succeeded, want about the drain timeout %v", elapsed, shortDrainTimeout)
	}
	if !old.Wait(stopBound) {
		t.Errorf("worker %d that ignored SIGTERM is still alive", first.pids[0])
	}
	if w := s.workers(); len(w) != 1 || w[0] != u.PIDs[0] {
		t.Errorf("supervisor's children %v, want only the new worker %v", w, u.PIDs)
	}
}

// TestSIGHUPStorm proves that a storm of SIGHUPs under load is coalesced into
// far fewer upgrades, loses no request, and leaves exactly --workers workers
// and the supervisor's fd count at its baseline.
func TestSIGHUPStorm(t *testing.T) {
	const workers = 2
	s := startSupervisor(t, supervisorConfig{binary: pathfindV1, flags: goodFlags("--workers", fmt.Sprint(workers))})
	addr := s.waitListening("http")
	s.waitReady(1)
	url := pathURL(t, addr)
	loads := startBothModes(t, url)

	// One upgrade first, so that whatever the supervisor opens once for its
	// first upgrade is in the baseline.
	warm := s.hup()
	if !warm.OK {
		t.Fatalf("warm-up upgrade failed: %s", warm.Reason)
	}
	s.waitDrained(warm.Start, warm.OldGen)
	// The supervisor may close a finished generation's fds just after it
	// logs "generation drained"; there is no later event to wait for.
	s.quiet(stormQuiet)
	baseFDs := procwatch.FDs(s.PID)

	awaitAll(t, loads)
	mark := s.Log.Len()
	// Each burst installs the other build, so that a lost SIGHUP shows: the
	// last generation must run the build installed before the last burst.
	builds := []struct{ bin, version string }{{pathfindV2, "v2"}, {pathfindV1, "v1"}}
	last := builds[(stormBursts-1)%2]
	per := stormSignals / stormBursts
	bursts := time.NewTicker(stormEvery)
	gaps := time.NewTicker(stormGap)
	for burst := 0; burst < stormBursts; burst++ {
		s.install(builds[burst%2].bin, 0o755)
		for i := 0; i < per; i++ {
			<-gaps.C
			if err := syscall.Kill(s.PID, syscall.SIGHUP); err != nil {
				t.Fatalf("SIGHUP %d: %v", burst*per+i, err)
			}
		}
		if burst < stormBursts-1 {
			<-bursts.C
		}
	}
	bursts.Stop()
	gaps.Stop()

	// The storm is over when every upgrade that started has ended and no
	// other starts for stormQuiet.
	var ups []procwatch.Upgrade
	from := mark
	for {
		st, i, ok := s.find(from, stormQuiet, msg("upgrade started", []string{"gen"}))
		if !ok {
			break
		}
		u := s.waitOutcome(i, st.Int("gen"))
		ups = append(ups, u)
		from = i + 1
		if len(ups) > stormSignals {
			t.Fatalf("more upgrades than SIGHUPs")
		}
	}
	if !s.running() {
		t.Fatalf("supervisor died in the storm: %v", s.Err())
	}
	coalesced := 0
	for _, e := range s.Log.All()[mark:] {
		if e.Is("upgrade coalesced") {
			coalesced++
		}
	}
	t.Logf("%d SIGHUPs made %d upgrades; %d were coalesced", stormSignals, len(ups), coalesced)
	if coalesced == 0 { // each burst outlasts the start of an upgrade
		t.Errorf("no \"upgrade coalesced\" line in the storm")
	}
	if len(ups) == 0 || len(ups) > stormSignals/2 {
		t.Errorf("%d upgrades for %d SIGHUPs, want at least 1 and far fewer than the signals", len(ups), stormSignals)
	}

	// Consistent generations: numbered in order, each success replacing the
	// last ready generation, each replaced generation drained.
	cur := warm.Gen
	for i, u := range ups {
		if i > 0 && u.Gen <= ups[i-1].Gen {
			t.Errorf("upgrade to generation %d after generation %d", u.Gen, ups[i-1].Gen)
		}
		if !u.OK {
			t.Errorf("storm upgrade to generation %d failed: %s", u.Gen, u.Reason)
			continue
		}
		if u.OldGen != cur || len(u.PIDs) != workers {
			t.Errorf("generation %d (pids %v) replaced generation %d, want %d with %d workers", u.Gen, u.PIDs, u.OldGen, cur, workers)
		}
		s.waitDrained(mark, u.OldGen)
		cur = u.Gen
	}
	final := ups[len(ups)-1]
	if w := s.workers(); len(w) != workers || !sameSet(w, final.PIDs) {
		t.Errorf("supervisor's children %v, want exactly the last generation's %v", w, final.PIDs)
	}
	checkNoZombies(t, s)
	if rec := probe(t, url); !contains(final.PIDs, rec.PID) || rec.Version != last.version {
		t.Errorf("answered by pid %d version %q, want one of %v, %s: was the last SIGHUP lost?", rec.PID, rec.Version, final.PIDs, last.version)
	}
	s.quiet(stormQuiet)
	// Flat but for the held binaries: the storm installed several builds,
	// and the supervisor keeps the last --keep-versions (3) open for a
	// rollback, one fd each, and no more however many upgrades ran.
	fds := procwatch.FDs(s.PID)
	other, base := withoutFile(fds, s.worker), withoutFile(baseFDs, s.worker)
	if len(other) != len(base) {
		t.Errorf("supervisor holds %d fds besides the worker's binaries after the storm, %d before:\nafter:  %v\nbefore: %v", len(other), len(base), fds, baseFDs)
	}
	if held := len(fds) - len(other); held < 1 || held > defaultKeepVersions {
		t.Errorf("supervisor holds %d worker binaries after the storm, want 1 to --keep-versions (%d):\n%v", held, defaultKeepVersions, fds)
	}
	awaitAll(t, loads)
	for i, run := range loads {
		noFailures(t, fmt.Sprint("load ", i), run.Stop())
	}
}

// defaultKeepVersions is --keep-versions' default.
const defaultKeepVersions = 3

// withoutFile is fds (procwatch.FDs) without those open on the file at path,
// whether it is still there or was replaced ("(deleted)").
func withoutFile(fds []string, path string) []string {
	var out []string
	for _, fd := range fds {
		_, target, _ := strings.Cut(fd, "=")
		if target != path && target != path+" (deleted)" {
			out = append(out, fd)
		}
	}
	return out
}
