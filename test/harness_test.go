package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/test/loadgen"
)

// entry is one line the supervisor (or a worker) wrote to stderr.
type entry struct {
	at     time.Time      // when we read it
	raw    string         // the line
	fields map[string]any // the JSON object, nil when the line is not JSON
}

// time is when the supervisor logged the entry, by its "time" field, or when
// we read it if that field does not parse.
func (e entry) time() time.Time {
	if t, err := time.Parse(time.RFC3339Nano, e.str("time")); err == nil {
		return t
	}
	return e.at
}

func (e entry) msg() string {
	s, _ := e.fields["message"].(string)
	return s
}

func (e entry) str(key string) string {
	s, _ := e.fields[key].(string)
	return s
}

// num is a numeric field; ok is false when it is missing or not a number.
func (e entry) num(key string) (float64, bool) {
	f, ok := e.fields[key].(float64)
	return f, ok
}

func (e entry) int(key string) int {
	f, _ := e.num(key)
	return int(f)
}

// ints is a field holding an array of numbers, such as "pids".
func (e entry) ints(key string) []int {
	a, _ := e.fields[key].([]any)
	var out []int
	for _, v := range a {
		if f, ok := v.(float64); ok {
			out = append(out, int(f))
		}
	}
	return out
}

// is says whether the entry is the supervisor's message msg with every key of
// keys present.
func (e entry) is(msg string, keys ...string) bool {
	if e.fields == nil || e.msg() != msg {
		return false
	}
	for _, k := range keys {
		if _, ok := e.fields[k]; !ok {
			return false
		}
	}
	return true
}

// logBook collects the lines of a supervisor's stderr as they come.
type logBook struct {
	mu      sync.Mutex
	entries []entry
	eof     bool
	changed chan struct{} // closed and replaced on every change
}

func newLogBook() *logBook { return &logBook{changed: make(chan struct{})} }

func (l *logBook) read(f *os.File) {
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		e := entry{at: time.Now(), raw: sc.Text()}
		if strings.HasPrefix(e.raw, "{") {
			var m map[string]any
			if json.Unmarshal([]byte(e.raw), &m) == nil {
				e.fields = m
			}
		}
		l.mu.Lock()
		l.entries = append(l.entries, e)
		close(l.changed)
		l.changed = make(chan struct{})
		l.mu.Unlock()
	}
	l.mu.Lock()
	l.eof = true
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// since returns the entries from index i on, whether the log has ended, and a
// channel closed at the next change.
func (l *logBook) since(i int) ([]entry, bool, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i > len(l.entries) {
		i = len(l.entries)
	}
	return append([]entry(nil), l.entries[i:]...), l.eof, l.changed
}

func (l *logBook) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

func (l *logBook) all() []entry {
	e, _, _ := l.since(0)
	return e
}

// supervisor is a running supervisor under test.
type supervisor struct {
	t      *testing.T
	cmd    *exec.Cmd
	pid    int
	logs   *logBook
	logR   *os.File
	done   chan struct{} // closed when the process has exited and been waited for
	err    error         // from Wait, valid after done
	dir    string        // holds the worker binary
	worker string        // the worker path the supervisor runs
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
}

// startSupervisor installs cfg.binary as the worker and starts a supervisor
// on it with JSON logs. It stops the supervisor at the end of the test.
func startSupervisor(t *testing.T, cfg supervisorConfig) *supervisor {
	t.Helper()
	needBinaries(t)
	s := &supervisor{t: t, logs: newLogBook(), done: make(chan struct{}), dir: t.TempDir()}
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
	s.start(t, args, cfg.env, cfg.inherit)
	t.Cleanup(s.stop)
	return s
}

func (s *supervisor) start(t *testing.T, args, env []string, extra []*os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	s.logR = r
	s.cmd = exec.Command(supervisorBin, args...)
	s.cmd.Env = append(os.Environ(), env...)
	s.cmd.Stdout = w
	s.cmd.Stderr = w
	s.cmd.ExtraFiles = extra
	err = s.cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	s.pid = s.cmd.Process.Pid
	addStarted(s.pid)
	go s.logs.read(r)
	go func() {
		s.err = s.cmd.Wait()
		removeStarted(s.pid)
		close(s.done)
	}()
	t.Logf("supervisor pid %d: %s", s.pid, strings.Join(args, " "))
}

// running reports whether the supervisor process is still up.
func (s *supervisor) running() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// stop ends the supervisor (SIGTERM, then SIGKILL), reaps workers it left
// behind, and checks its output for panics and data races.
func (s *supervisor) stop() {
	t := s.t
	if s.running() {
		syscall.Kill(s.pid, syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(stopBound):
			t.Errorf("supervisor %d did not stop within %v of SIGTERM; killing it", s.pid, stopBound)
			syscall.Kill(s.pid, syscall.SIGKILL)
			<-s.done
		}
	}
	if orphans := reapOrphans(stopBound); len(orphans) > 0 {
		t.Errorf("workers %v outlived supervisor %d; killed them", orphans, s.pid)
	}
	// The log ends when every holder of the pipe has exited.
	s.waitLogEOF(stopBound)
	s.logR.Close()
	for _, e := range s.logs.all() {
		if strings.Contains(e.raw, "DATA RACE") || strings.HasPrefix(e.raw, "panic:") || strings.HasPrefix(e.raw, "fatal error:") {
			t.Errorf("supervisor output: %s", e.raw)
		}
	}
	if t.Failed() {
		s.dump(80)
	}
}

func (s *supervisor) waitLogEOF(d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		_, eof, changed := s.logs.since(1 << 30)
		if eof {
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			return
		}
	}
}

// dump logs the last n lines of output.
func (s *supervisor) dump(n int) {
	all := s.logs.all()
	if len(all) > n {
		all = all[len(all)-n:]
	}
	var b strings.Builder
	for _, e := range all {
		b.WriteString(e.raw)
		b.WriteByte('\n')
	}
	s.t.Logf("last %d lines of supervisor %d output:\n%s", len(all), s.pid, b.String())
}

// find waits up to d for the first entry from index from on that match
// accepts, and returns it with its index. ok is false at the bound, or when
// the supervisor has exited and its output has ended.
func (s *supervisor) find(from int, d time.Duration, match func(entry) bool) (entry, int, bool) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	exited := s.done
	for {
		es, eof, changed := s.logs.since(from)
		for i, e := range es {
			if match(e) {
				return e, from + i, true
			}
		}
		from += len(es)
		if eof {
			return entry{}, from, false
		}
		select {
		case <-changed:
		case <-timer.C:
			return entry{}, from, false
		case <-exited:
			// Read what is left in the pipe, then give up.
			exited = nil
			timer.Reset(time.Second)
		}
	}
}

// quiet waits until the supervisor has written nothing for d, for at most
// waitBound.
func (s *supervisor) quiet(d time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(waitBound)
	from := s.logs.len()
	for time.Now().Before(deadline) {
		_, i, ok := s.find(from, d, func(entry) bool { return true })
		if !ok {
			return
		}
		from = i + 1
	}
	s.t.Fatalf("supervisor %d never fell quiet for %v", s.pid, d)
}

// waitFor is find that fails the test when nothing matches.
func (s *supervisor) waitFor(from int, d time.Duration, what string, match func(entry) bool) (entry, int) {
	s.t.Helper()
	e, i, ok := s.find(from, d, match)
	if !ok {
		state := "running"
		if !s.running() {
			state = fmt.Sprintf("exited: %v", s.err)
		}
		s.t.Fatalf("supervisor %d (%s): no %s within %v", s.pid, state, what, d)
	}
	return e, i
}

// msg matches the supervisor's message msg (with keys present) and, when
// given, more conditions.
func msg(name string, keys []string, conds ...func(entry) bool) func(entry) bool {
	return func(e entry) bool {
		if !e.is(name, keys...) {
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

func genIs(gen int) func(entry) bool {
	return func(e entry) bool { return e.int("gen") == gen }
}

// generation is a ready generation of workers.
type generation struct {
	gen  int
	pids []int
}

// waitListening returns the address of the listener named name.
func (s *supervisor) waitListening(name string) string {
	s.t.Helper()
	e, _ := s.waitFor(0, waitBound, fmt.Sprintf("%q listening", name), msg("listening", []string{"name", "addr"}, func(e entry) bool {
		return e.str("name") == name
	}))
	return e.str("addr")
}

// waitReady waits for generation gen to be ready.
func (s *supervisor) waitReady(gen int) generation {
	s.t.Helper()
	e, _ := s.waitFor(0, waitBound, fmt.Sprintf("generation %d ready", gen), msg("generation ready", []string{"gen", "pids"}, genIs(gen)))
	return generation{gen: gen, pids: e.ints("pids")}
}

// upgrade is the outcome of one SIGHUP.
type upgrade struct {
	ok      bool
	gen     int
	oldGen  int
	pids    []int
	oldPids []int
	reason  string
	readyMS float64
	at      time.Time // when the outcome was logged
	start   int       // the log index of "upgrade started"
	end     int       // the log index of the outcome
}

// hup sends SIGHUP and waits for the next upgrade to start and end.
func (s *supervisor) hup() upgrade {
	s.t.Helper()
	mark := s.logs.len()
	if err := syscall.Kill(s.pid, syscall.SIGHUP); err != nil {
		s.t.Fatalf("SIGHUP: %v", err)
	}
	return s.waitUpgrade(mark)
}

// waitUpgrade waits for the first upgrade started at log index from on, and
// for its outcome.
func (s *supervisor) waitUpgrade(from int) upgrade {
	s.t.Helper()
	st, i := s.waitFor(from, waitBound, "upgrade started", msg("upgrade started", []string{"gen"}))
	u := s.waitOutcome(i, st.int("gen"))
	u.start = i
	return u
}

// waitOutcome waits for the outcome of the upgrade to generation gen.
func (s *supervisor) waitOutcome(from, gen int) upgrade {
	s.t.Helper()
	e, i := s.waitFor(from, waitBound, fmt.Sprintf("outcome of the upgrade to generation %d", gen), func(e entry) bool {
		return (e.is("upgrade succeeded", "gen") || e.is("upgrade failed", "gen")) && e.int("gen") == gen
	})
	u := upgrade{
		ok: e.msg() == "upgrade succeeded", gen: gen, oldGen: e.int("old_gen"),
		pids: e.ints("pids"), oldPids: e.ints("old_pids"), reason: e.str("reason"), at: e.time(), end: i,
	}
	u.readyMS, _ = e.num("ready_ms")
	return u
}

// waitDrained waits for generation gen to have drained.
func (s *supervisor) waitDrained(from, gen int) entry {
	s.t.Helper()
	e, _ := s.waitFor(from, waitBound, fmt.Sprintf("generation %d drained", gen), msg("generation drained", []string{"gen"}, genIs(gen)))
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
func (s *supervisor) workers() []int { return childPIDs(s.pid) }

// checkNoZombies fails the test when the supervisor has children that exited
// and were not reaped.
func checkNoZombies(t *testing.T, s *supervisor) {
	t.Helper()
	for _, c := range children(s.pid) {
		if c.state == 'Z' {
			t.Errorf("supervisor did not reap its child %d", c.pid)
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
