package test

import (
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

// supervisor is a running supervisor under test.
type supervisor struct {
	*procwatch.Supervisor
	t      *testing.T
	dir    string // holds the worker binary
	worker string // the worker path the supervisor runs
}

// supervisorConfig is how to start one.
type supervisorConfig struct {
	listen     []string // --listen values; default one "http=tcp://127.0.0.1:0"
	flags      []string // more flags
	env        []string // more environment, such as the helper's name
	binary     string   // installed as the worker
	mode       os.FileMode
	workerArgs []string
	inherit    []*os.File // passed to the supervisor as fds 3, 4, ... (a leaky parent)
	ownGroup   bool       // the supervisor leads a process group of its own, as a terminal's job does
}

// startSupervisor installs cfg.binary as the worker and starts a supervisor
// on it with JSON logs. It stops the supervisor at the end of the test.
func startSupervisor(t *testing.T, cfg supervisorConfig) *supervisor {
	t.Helper()
	needBinaries(t)
	s := &supervisor{t: t, dir: t.TempDir()}
	s.worker = filepath.Join(s.dir, "worker")
	if cfg.mode == 0 {
		cfg.mode = 0o755
	}
	if err := copyFile(s.worker, cfg.binary, cfg.mode); err != nil {
		t.Fatal(err)
	}
	if len(cfg.listen) == 0 {
		cfg.listen = []string{"http=tcp://127.0.0.1:0"}
	}
	args := []string{"--log-format", "json", "--log-level", "info"}
	for _, l := range cfg.listen {
		args = append(args, "--listen", l)
	}
	args = append(args, cfg.flags...)
	args = append(args, "--", s.worker)
	args = append(args, cfg.workerArgs...)
	cmd := exec.Command(supervisorBin, args...)
	cmd.Env = append(os.Environ(), cfg.env...)
	cmd.ExtraFiles = cfg.inherit
	if cfg.ownGroup {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	p, err := procwatch.Start("supervisor", cmd)
	if err != nil {
		t.Fatal(err)
	}
	s.Supervisor = &procwatch.Supervisor{Proc: p}
	t.Logf("supervisor pid %d: %s", s.PID, strings.Join(args, " "))
	t.Cleanup(s.stop)
	return s
}

// running reports whether the supervisor process is still up.
func (s *supervisor) running() bool { return !s.Exited() }

// stop ends the supervisor (SIGTERM, then SIGKILL), reaps workers it left
// behind, and checks its output for panics and data races.
func (s *supervisor) stop() {
	t := s.t
	if err := s.Stop(stopBound); err != nil {
		t.Error(err)
	}
	orphans, err := procwatch.ReapOrphans("", stopBound)
	if len(orphans) > 0 {
		t.Errorf("workers %v outlived supervisor %d; killed them", orphans, s.PID)
	}
	if err != nil {
		t.Error(err)
	}
	// The log ends when every holder of the pipe has exited.
	s.Log.WaitEOF(stopBound)
	s.CloseOutput()
	for _, e := range s.Log.All() {
		if strings.Contains(e.Raw, "DATA RACE") || strings.HasPrefix(e.Raw, "panic:") || strings.HasPrefix(e.Raw, "fatal error:") {
			t.Errorf("supervisor output: %s", e.Raw)
		}
	}
	if t.Failed() {
		t.Logf("last lines of supervisor %d output:\n%s", s.PID, s.Log.Tail(80))
	}
}

// find waits up to d for the first entry from index from on that match
// accepts, and returns it with its index. ok is false at the bound, or when
// the supervisor has exited and its output has ended.
func (s *supervisor) find(from int, d time.Duration, match func(procwatch.Entry) bool) (procwatch.Entry, int, bool) {
	e, i, err := s.Find(from, d, "matching line", match)
	return e, i, err == nil
}

// quiet waits until the supervisor has written nothing for d, for at most
// waitBound.
func (s *supervisor) quiet(d time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(waitBound)
	from := s.Log.Len()
	for time.Now().Before(deadline) {
		_, i, ok := s.find(from, d, func(procwatch.Entry) bool { return true })
		if !ok {
			return
		}
		from = i + 1
	}
	s.t.Fatalf("supervisor %d never fell quiet for %v", s.PID, d)
}

// must fails the test on a failed wait.
func (s *supervisor) must(err error) {
	s.t.Helper()
	if err != nil {
		s.t.Fatal(err)
	}
}

// waitFor is find that fails the test when nothing matches.
func (s *supervisor) waitFor(from int, d time.Duration, what string, match func(procwatch.Entry) bool) (procwatch.Entry, int) {
	s.t.Helper()
	e, i, err := s.Find(from, d, what, match)
	s.must(err)
	return e, i
}

// msg matches the supervisor's message msg (with keys present) and, when
// given, more conditions.
func msg(name string, keys []string, conds ...func(procwatch.Entry) bool) func(procwatch.Entry) bool {
	return func(e procwatch.Entry) bool {
		if !e.Is(name, keys...) {
			return false
		}
		for _, c := range conds {
			if !c(e) {
				return false
			}
		}
		return true
	}
}

func genIs(gen int) func(procwatch.Entry) bool {
	return func(e procwatch.Entry) bool { return e.Int("gen") == gen }
}

// generation is a ready generation of workers.
type generation struct {
	gen  int
	pids []int
}

// waitListening returns the address of the listener named name.
func (s *supervisor) waitListening(name string) string {
	s.t.Helper()
	addr, err := s.WaitListening(name, waitBound)
	s.must(err)
	return addr
}

// waitReady waits for generation gen to be ready.
func (s *supervisor) waitReady(gen int) generation {
	s.t.Helper()
	pids, err := s.WaitReady(gen, waitBound)
	s.must(err)
	return generation{gen: gen, pids: pids}
}

// hup sends SIGHUP and waits for the next upgrade to start and end.
func (s *supervisor) hup() procwatch.Upgrade {
	s.t.Helper()
	u, err := s.HUP(waitBound)
	s.must(err)
	return u
}

// waitOutcome waits for the outcome of the upgrade to generation gen, whose
// "upgrade started" is at log index from.
func (s *supervisor) waitOutcome(from, gen int) procwatch.Upgrade {
	s.t.Helper()
	u, err := s.WaitOutcome(from, gen, waitBound)
	s.must(err)
	return u
}

// waitDrained waits for generation gen to have drained.
func (s *supervisor) waitDrained(from, gen int) procwatch.Entry {
	s.t.Helper()
	e, err := s.WaitDrained(from, gen, waitBound)
	s.must(err)
	return e
}

// install replaces the worker binary by src (a new file renamed over the old
// one, so that running copies are not disturbed).
func (s *supervisor) install(src string, mode os.FileMode) {
	s.t.Helper()
	if err := copyFile(s.worker, src, mode); err != nil {
		s.t.Fatal(err)
	}
}

// workers lists the supervisor's live worker processes.
func (s *supervisor) workers() []int { return procwatch.ChildPIDs(s.PID) }

// checkNoZombies fails the test when the supervisor has children that exited
// and were not reaped.
func checkNoZombies(t *testing.T, s *supervisor) {
	t.Helper()
	for _, c := range procwatch.Children(s.PID) {
		if c.State == 'Z' {
			t.Errorf("supervisor did not reap its child %d", c.PID)
		}
	}
}

// probe sends one request on a new connection and fails the test unless it
// succeeds.
func probe(t *testing.T, url string) loadgen.Record {
	t.Helper()
	rec, err := loadgen.Get(url, probeTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Class != loadgen.OK {
		t.Fatalf("GET %s: %v: %v", url, rec.Class, rec.Err)
	}
	return rec
}

// pathURL finds a /path query that the pathfind worker at addr answers with
// 200, so that the load exercises the real service; /healthz otherwise.
func pathURL(t *testing.T, addr string) string {
	t.Helper()
	for _, q := range []string{"from=100,200&to=300,400", "from=10,10&to=120,90", "from=5,5&to=40,40", "from=1,1&to=3,3"} {
		url := "http://" + addr + "/path?" + q
		rec, err := loadgen.Get(url, probeTimeout)
		if err == nil && rec.Class == loadgen.OK {
			return url
		}
	}
	t.Logf("no /path query answered 200 at %s; loading /healthz", addr)
	return "http://" + addr + "/healthz"
}

// sameSet says whether a and b hold the same numbers.
func sameSet(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !contains(b, x) {
			return false
		}
	}
	return true
}

func contains(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// startLoad starts a load run and stops it at the end of the test at the
// latest.
func startLoad(t *testing.T, cfg loadgen.Config) *loadgen.Run {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = requestTimeout
	}
	run, err := loadgen.Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { run.Stop() })
	return run
}

// startBothModes starts a load run in each client mode, loadClients clients
// in all.
func startBothModes(t *testing.T, url string) []*loadgen.Run {
	t.Helper()
	return []*loadgen.Run{
		startLoad(t, loadgen.Config{URL: url, Mode: loadgen.NewConn, Clients: loadClients / 2}),
		startLoad(t, loadgen.Config{URL: url, Mode: loadgen.KeepAlive, Clients: loadClients / 2}),
	}
}

// awaitLoad waits until run has made n requests in all.
func awaitLoad(t *testing.T, run *loadgen.Run, n int) {
	t.Helper()
	if !run.Await(n, waitBound) {
		t.Fatalf("load made only %d requests of %d within %v", run.Len(), n, waitBound)
	}
}

// noFailures fails the test when any request of res failed.
func noFailures(t *testing.T, what string, res *loadgen.Result) {
	t.Helper()
	t.Logf("%s load: %s", what, res.Summary())
	if n := res.Failed(); n > 0 {
		t.Errorf("%s load: %d of %d requests failed: %v", what, n, len(res.Records), res.ByClass())
	}
	if len(res.Records) == 0 {
		t.Errorf("%s load: no requests were made", what)
	}
}

// startSupervisorFrom is startSupervisor with the supervisor binary bin in
// place of the one TestMain built: a test that replaces the supervisor's
// own binary (a self-upgrade to a broken build) runs a copy of its own.
func startSupervisorFrom(t *testing.T, bin string, cfg supervisorConfig) *supervisor {
	t.Helper()
	built := supervisorBin
	supervisorBin = bin // tests do not run in parallel
	defer func() { supervisorBin = built }()
	return startSupervisor(t, cfg)
}

// publicTempDir is a temporary directory that every user may enter, for a
// socket or a binary that a client of another uid uses; it is removed at the
// end of the test. Its path is short, as a unix socket's must be.
func publicTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
