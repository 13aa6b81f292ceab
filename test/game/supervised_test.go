package game

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"syscall"
	"testing"

	"github.com/procswitch/supervisor/test/procwatch"
)

// supervised is a supervisor running the game in handover mode.
type supervised struct {
	*proc
	worker   string // the path the supervisor runs; replaced by rename to upgrade
	snapshot string
	addr     string // the game's listening address
	at       int    // log cursor: lines before it have been waited for
}

// options of startSupervised.
type supervisedOpts struct {
	bin        string                // installed as the worker first
	env        []string              // added to the supervisor's (and so the workers') environment
	flags      []string              // more supervisor flags
	workerArgs []string              // the game's flags
	before     func(snapshot string) // called before the supervisor starts
	supervisor string                // the supervisor binary; bins.supervisor when empty
}

func startSupervised(t *testing.T, o supervisedOpts) *supervised {
	t.Helper()
	needBinaries(t)
	dir := t.TempDir()
	s := &supervised{worker: filepath.Join(dir, "gameserver"), snapshot: filepath.Join(dir, "snap")}
	s.install(t, o.bin)
	if o.before != nil {
		o.before(s.snapshot)
	}
	args := []string{"--mode", "handover", "--snapshot", s.snapshot, "--listen", "game=tcp://127.0.0.1:0",
		"--log-format", "json", "--restart-min", "10ms"}
	args = append(append(args, o.flags...), "--", s.worker)
	if o.supervisor == "" {
		o.supervisor = bins.supervisor
	}
	s.proc = startProc(t, "supervisor", o.supervisor, o.env, append(args, o.workerArgs...)...)
	s.addr = s.waitMsg(&s.at, "listening", func(l line) bool { return l.Str("name") == "game" }).Str("addr")
	return s
}

// install puts bin at the worker's path as a deployment does: a new file
// renamed over the old one, never a write in place.
func (s *supervised) install(t *testing.T, bin string) {
	t.Helper()
	if err := procwatch.Install(s.worker, bin); err != nil {
		t.Fatal(err)
	}
}

// ready waits for the next "generation ready" and returns its PID.
func (s *supervised) ready(t *testing.T) (gen, pid int) {
	t.Helper()
	l := s.waitMsg(&s.at, "generation ready", nil)
	pids := l.Ints("pids")
	if len(pids) != 1 {
		t.Fatalf("generation ready with pids %v, want one (handover mode runs one worker)", pids)
	}
	return l.Int("gen"), pids[0]
}

// outcome is how one SIGHUP ended.
type outcome struct {
	gen     int
	ok      bool
	end     line // "upgrade succeeded" or "upgrade failed"
	started int  // log index after "upgrade started"
}

// hup sends SIGHUP and waits for the upgrade it starts to succeed or fail.
func (s *supervised) hup(t *testing.T) outcome {
	t.Helper()
	s.signal(syscall.SIGHUP)
	gen := s.waitMsg(&s.at, "upgrade started", nil).Int("gen")
	o := outcome{gen: gen, started: s.at}
	o.end = s.waitFor(&s.at, fmt.Sprintf("the outcome of the upgrade to gen %d", gen), func(l line) bool {
		return (l.Msg() == "upgrade succeeded" || l.Msg() == "upgrade failed") && l.Int("gen") == gen
	})
	o.ok = o.end.Msg() == "upgrade succeeded"
	return o
}

// restoredRe is the new worker's log line after it restored the handed-over
// state.
var restoredRe = regexp.MustCompile(`gameserver\[(\d+)\]: handover: restored (\d+) players and (\d+) connections in (\S+)`)

// succeeded checks an upgrade's success line and the new worker's restore
// line, and returns the new worker's PID.
func (s *supervised) succeeded(t *testing.T, o outcome, oldPID, conns int) int {
	t.Helper()
	if !o.ok {
		t.Fatalf("upgrade to gen %d failed: %s", o.gen, o.end.Str("reason"))
	}
	// "upgrade succeeded" lists the old generation's live workers, none by
	// then in handover mode: the old PIDs are in the handover's first line.
	at := o.started
	old := s.waitMsg(&at, "handover: new worker initialised, old one saving", nil).Ints("old_pids")
	pids := o.end.Ints("pids")
	if len(pids) != 1 || pids[0] == oldPID || !slices.Contains(old, oldPID) {
		t.Fatalf("gen %d: pids %v, old_pids %v; the old worker was %d", o.gen, pids, old, oldPID)
	}
	if _, ok := o.end.Num("blackout_ms"); !ok {
		t.Errorf("gen %d: upgrade succeeded without blackout_ms: %s", o.gen, o.end.Raw)
	}
	if got := o.end.Int("connections"); got != conns {
		t.Errorf("gen %d: %d connections handed over, want %d", o.gen, got, conns)
	}
	at = o.started
	m := s.waitRe(&at, restoredRe)
	if m[1] != strconv.Itoa(pids[0]) || m[3] != strconv.Itoa(conns) {
		t.Errorf("gen %d: restore line %q: want pid %d and %d connections", o.gen, m[0], pids[0], conns)
	}
	return pids[0]
}
