package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/internal/control"
	engine "github.com/procswitch/supervisor/internal/supervisor"
	"github.com/procswitch/supervisor/test/procwatch"
)

// Bounds and sizes of the control socket tests.
const (
	ctlBound     = 30 * time.Second // for one `supervisor ctl` run to exit
	floodConns   = 50               // connections opened at once in TestControlAbuse
	floodCtls    = 5                // and `ctl status` runs with them
	nobodyUID    = 65534            // the client of another user
	refusalTries = 4                // refused requests of each command
	gateEnv      = "PROCSWITCH_TEST_GATE"
)

func init() {
	// gate serves once the test lets it: it says READY=1 only after the
	// test has opened and closed the FIFO $PROCSWITCH_TEST_GATE, so that an
	// upgrade stays under way for as long as the test needs.
	helpers["gate"] = helperGate
}

func helperGate() int {
	ln, err := passedListener(0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper gate: %v\n", err)
		return 1
	}
	// Blocks until the test opens the FIFO for writing; then reads to its
	// close. SIGTERM meanwhile ends the helper (Go's default action).
	f, err := os.Open(os.Getenv(gateEnv))
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper gate: %v\n", err)
		return 1
	}
	io.Copy(io.Discard, f)
	f.Close()
	pid := strconv.Itoa(os.Getpid())
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Worker-Pid", pid)
		w.Header().Set("X-Worker-Version", "gate")
		fmt.Fprintln(w, "through the gate")
	})}
	drain := make(chan os.Signal, 1)
	signal.Notify(drain, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		<-drain
		ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		defer cancel()
		srv.Shutdown(ctx)
		close(done)
	}()
	if err := sdNotify("READY=1"); err != nil {
		fmt.Fprintf(os.Stderr, "helper gate: %v\n", err)
		return 1
	}
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		fmt.Fprintf(os.Stderr, "helper gate: %v\n", err)
		return 1
	}
	<-done
	return 0
}

// ctlStatus is `supervisor ctl status --json`, decoded as its documentation
// spells it rather than with the supervisor's own types.
type ctlStatus struct {
	PID         int         `json:"pid"`
	Mode        string      `json:"mode"`
	Current     *ctlGen     `json:"current"`
	Upgrading   *ctlGen     `json:"upgrading"`
	Draining    []ctlGen    `json:"draining"`
	LastUpgrade *ctlUpgrade `json:"last_upgrade"`
	Stopping    bool        `json:"stopping"`
}

type ctlGen struct {
	Gen     int         `json:"gen"`
	Phase   string      `json:"phase"`
	Binary  string      `json:"binary"`
	Version string      `json:"version"`
	ReadyMS float64     `json:"ready_ms"`
	Workers []ctlWorker `json:"workers"`
}

type ctlWorker struct {
	PID      int    `json:"pid"`
	Ready    bool   `json:"ready"`
	Status   string `json:"status"`
	Restarts int    `json:"restarts"`
}

type ctlUpgrade struct {
	Gen    int       `json:"gen"`
	OK     bool      `json:"ok"`
	Kind   string    `json:"kind"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// pids are the generation's worker PIDs; allReady says each is ready.
func (g *ctlGen) pids() []int {
	var pids []int
	for _, w := range g.Workers {
		pids = append(pids, w.PID)
	}
	return pids
}

func (g *ctlGen) allReady() bool {
	for _, w := range g.Workers {
		if !w.Ready {
			return false
		}
	}
	return len(g.Workers) > 0
}

// controlResponse is one answer on the control socket, as the protocol
// (internal/control's package doc) spells it.
type controlResponse struct {
	OK     bool       `json:"ok"`
	Error  string     `json:"error"`
	Gen    int        `json:"gen"`
	Status *ctlStatus `json:"status"`
}

// ctlRun is one run of `supervisor ctl`.
type ctlRun struct {
	args           []string
	code           int // the exit status; -1 when it was killed
	stdout, stderr string
	end            time.Time // when it had exited
}

func (r ctlRun) String() string {
	return fmt.Sprintf("supervisor %s: exit %d\nstdout: %q\nstderr: %q", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// execCtl runs `bin ctl [--control control] args...` as the user cred (nil:
// as we are), without RUNTIME_DIRECTORY in its environment, for at most
// ctlBound. It may run on any goroutine.
func execCtl(bin string, cred *syscall.Credential, control string, args ...string) (ctlRun, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ctlBound)
	defer cancel()
	full := []string{"ctl"}
	if control != "" {
		full = append(full, "--control", control)
	}
	full = append(full, args...)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, full...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RUNTIME_DIRECTORY=") && !strings.HasPrefix(kv, "GORACE=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// A -race build otherwise sleeps a second before it exits.
	cmd.Env = append(cmd.Env, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	err := procwatch.Run(cmd)
	r := ctlRun{args: full, stdout: stdout.String(), stderr: stderr.String(), end: time.Now()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return r, fmt.Errorf("supervisor %s did not exit within %v", strings.Join(full, " "), ctlBound)
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		return r, fmt.Errorf("supervisor %s: %w", strings.Join(full, " "), err)
	}
	return r, nil
}

// ctl runs `supervisor ctl --control control args...`.
func ctl(t *testing.T, control string, args ...string) ctlRun {
	t.Helper()
	r, err := execCtl(supervisorBin, nil, control, args...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// ctlOK is ctl that fails the test unless it exits 0 with nothing on stderr.
func ctlOK(t *testing.T, control string, args ...string) ctlRun {
	t.Helper()
	r := ctl(t, control, args...)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("want exit 0 and no error: %v", r)
	}
	return r
}

// ctlFails is ctl that fails the test unless it exits 1 with one line on
// stderr, and nothing on stdout, that holds each of want; it returns that line.
func ctlFails(t *testing.T, control string, args []string, want ...string) string {
	t.Helper()
	r := ctl(t, control, args...)
	return checkCtlFailure(t, r, want...)
}

func checkCtlFailure(t *testing.T, r ctlRun, want ...string) string {
	t.Helper()
	if r.code != 1 || r.stdout != "" {
		t.Errorf("want exit 1, nothing on stdout and the reason on stderr: %v", r)
	}
	line := oneLine(t, r.stderr)
	for _, w := range want {
		if !strings.Contains(line, w) {
			t.Errorf("error line does not mention %q: %s", w, line)
		}
	}
	return line
}

// oneLine returns out's only line, and fails the test unless it has
// exactly one, and no stack trace.
func oneLine(t *testing.T, out string) string {
	t.Helper()
	if strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
		t.Errorf("stack trace in the output:\n%s", out)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 1 || lines[0] == "" {
		t.Errorf("%d lines, want one:\n%s", len(lines), out)
		return out
	}
	return lines[0]
}

// statusOf is `ctl status --json`.
func statusOf(t *testing.T, control string) ctlStatus {
	t.Helper()
	r := ctlOK(t, control, "status", "--json")
	var st ctlStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json: %v: %q", err, r.stdout)
	}
	if strings.Count(strings.TrimRight(r.stdout, "\n"), "\n") != 0 {
		t.Errorf("status --json is not one line: %q", r.stdout)
	}
	if st.Current == nil {
		t.Fatalf("status --json without a current generation: %s", r.stdout)
	}
	return st
}

// binaryVersion is the version `ctl status` shows for the binary at path:
// its sha256, 12 hex digits.
func binaryVersion(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:12]
}

// checkControlSocket checks that path is a unix socket of mode 0600.
func checkControlSocket(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket %s: mode %v, want a socket of mode 0600", path, fi.Mode())
	}
}

// ctlStop stops s with `ctl stop` and checks that it drains and exits 0,
// and removes its control socket.
func ctlStop(t *testing.T, s *supervisor, control string) {
	t.Helper()
	mark := s.Log.Len()
	r := ctlOK(t, control, "stop")
	if !strings.Contains(r.stdout, "stopping") {
		t.Errorf("ctl stop said %q", r.stdout)
	}
	select {
	case <-s.Done():
	case <-time.After(stopBound):
		t.Fatalf("supervisor did not exit within %v of ctl stop", stopBound)
	}
	if s.Err() != nil {
		t.Errorf("supervisor exited with %v after ctl stop, want 0", s.Err())
	}
	if _, _, ok := s.find(mark, waitBound, msg("stopped", nil)); !ok {
		t.Errorf("no \"stopped\" line after ctl stop")
	}
	if _, err := os.Lstat(control); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket %s left behind: %v", control, err)
	}
}

// TestCtlStatusUpgradeStop proves that `ctl status` shows what runs (text and
// JSON: generation, worker PIDs, version, last upgrade), that `ctl upgrade
// --wait` exits 0 once the new generation is ready and serving, that `ctl
// upgrade` without --wait only asks, and that `ctl stop` drains and the
// supervisor exits 0, taking its control socket and PID file with it.
func TestCtlStatusUpgradeStop(t *testing.T) {
	dir := t.TempDir()
	control, pidFile := filepath.Join(dir, "control"), filepath.Join(dir, "pid")
	s := startSupervisor(t, supervisorConfig{binary: pathfindV1, flags: goodFlags(
		"--workers", "2", "--control", control, "--pid-file", pidFile)})
	addr := s.waitListening("http")
	first := s.waitReady(1)
	url := pathURL(t, addr)
	// The PID file is written, and the binary hashed, just after the ready.
	s.waitFor(0, waitBound, "supervisor ready", msg("supervisor ready", []string{"pid"}))
	s.waitFor(0, waitBound, "generation 1 version", msg("generation version", []string{"gen", "version"}, genIs(1)))
	checkControlSocket(t, control)
	if b, err := os.ReadFile(pidFile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(s.PID) {
		t.Errorf("pid file: %q, %v; want %d", b, err, s.PID)
	}

	v1, v2 := binaryVersion(t, pathfindV1), binaryVersion(t, pathfindV2)
	st := statusOf(t, control)
	if st.PID != s.PID || st.Mode != "overlap" || st.Current.Gen != 1 || st.Current.Phase != "serving" ||
		st.Current.Binary != s.worker || st.Current.Version != v1 || !sameSet(st.Current.pids(), first.pids) ||
		!st.Current.allReady() || st.Upgrading != nil || st.LastUpgrade != nil || st.Stopping {
		t.Errorf("status --json: %+v current %+v; want pid %d, generation 1 serving %s version %s, workers %v ready, no upgrade yet",
			st, st.Current, s.PID, s.worker, v1, first.pids)
	}
	text := ctlOK(t, control, "status").stdout
	t.Logf("ctl status:\n%s", text)
	want := []string{
		fmt.Sprintf("supervisor pid %d, mode overlap", s.PID),
		fmt.Sprintf("serving: generation 1 (serving), binary %s, version %s", s.worker, v1),
		"last upgrade: none yet",
	}
	for _, pid := range first.pids {
		want = append(want, fmt.Sprintf("worker pid %d ready", pid))
	}
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("ctl status does not say %q", w)
		}
	}

	// upgrade --wait: exit 0 once generation 2 serves.
	s.install(pathfindV2, 0o755)
	mark := s.Log.Len()
	r := ctlOK(t, control, "upgrade", "--wait")
	if r.stdout != "upgrade succeeded: generation 2 is ready and serving\n" {
		t.Errorf("upgrade --wait said %q", r.stdout)
	}
	// The supervisor logged the success before it answered.
	e, _ := s.waitFor(mark, waitBound, "upgrade succeeded", msg("upgrade succeeded", []string{"gen", "pids"}, genIs(2)))
	if e.Time().After(r.end) {
		t.Errorf("upgrade --wait exited at %v, before generation 2 was ready at %v", r.end, e.Time())
	}
	next := e.Ints("pids")
	st = statusOf(t, control)
	if st.Current.Gen != 2 || !sameSet(st.Current.pids(), next) || !st.Current.allReady() ||
		st.LastUpgrade == nil || !st.LastUpgrade.OK || st.LastUpgrade.Gen != 2 {
		t.Errorf("status just after upgrade --wait: current %+v, last upgrade %+v; want generation 2 %v all ready, last upgrade 2 ok",
			st.Current, st.LastUpgrade, next)
	}
	s.waitDrained(mark, 1)
	if rec := probe(t, url); !contains(next, rec.PID) || rec.Version != "v2" {
		t.Errorf("after upgrade --wait: answered by pid %d version %q, want one of %v, v2", rec.PID, rec.Version, next)
	}
	s.waitFor(mark, waitBound, "generation 2 version", msg("generation version", []string{"gen", "version"}, genIs(2)))
	if st = statusOf(t, control); st.Current.Version != v2 || len(st.Draining) != 0 {
		t.Errorf("status after the drain: current version %q, draining %+v; want %s, none", st.Current.Version, st.Draining, v2)
	}
	if text = ctlOK(t, control, "status").stdout; !strings.Contains(text, "last upgrade: generation 2 succeeded at ") {
		t.Errorf("ctl status after the upgrade:\n%s", text)
	}

	// upgrade without --wait: answered at once, the upgrade follows.
	mark = s.Log.Len()
	if r = ctlOK(t, control, "upgrade"); !strings.Contains(r.stdout, "upgrade requested") {
		t.Errorf("upgrade said %q", r.stdout)
	}
	u, err := s.WaitUpgrade(mark, waitBound)
	s.must(err)
	if !u.OK || u.Gen != 3 {
		t.Errorf("the upgrade ctl asked for: %+v, want generation 3 ready", u)
	}
	s.waitDrained(mark, 2)

	ctlStop(t, s, control)
	if _, err := os.Stat(pidFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid file left behind after the stop: %v", err)
	}
	ctlFails(t, control, []string{"status"}, "no control socket", control)
}

// TestCtlUpgradeFails proves that `ctl upgrade --wait` to a bad build exits 1
// with the reason on stderr while the old generation goes on serving, with no
// failed request under load; `ctl status` then shows the failure; `ctl stop`
// still drains and the supervisor exits 0.
func TestCtlUpgradeFails(t *testing.T) {
	tests := []struct {
		name   string
		helper string // the helper the test binary runs as the bad worker
		mode   os.FileMode
		kind   engine.Kind
	}{
		{"exits at once", "exit", 0o755, engine.KindExited},
		{"never ready", "noready", 0o755, engine.KindNotReady},
		{"not executable", "", 0o644, engine.KindNotExecutable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var env []string
			bad := pathfindV2
			if tt.helper != "" {
				env = []string{helperEnv + "=" + tt.helper} // pathfind ignores it
				bad = helperBin
			}
			control := filepath.Join(t.TempDir(), "control")
			s := startSupervisor(t, supervisorConfig{binary: pathfindV1, env: env, flags: []string{
				"--ready", "notify", "--ready-timeout", badReadyTimeout.String(),
				"--drain-timeout", drainTimeout.String(), "--control", control,
			}})
			addr := s.waitListening("http")
			first := s.waitReady(1)
			url := pathURL(t, addr)
			loads := startBothModes(t, url)
			awaitAll(t, loads)

			s.install(bad, tt.mode)
			mark := s.Log.Len()
			line := ctlFails(t, control, []string{"upgrade", "--wait"}, "upgrade to generation 2 failed")
			t.Logf("ctl upgrade --wait: %s", line)
			u := s.waitOutcome(mark, 2)
			if u.OK || u.Kind != string(tt.kind) || !strings.HasSuffix(line, "("+u.Kind+")") || !strings.Contains(line, u.Reason) {
				t.Errorf("logged outcome %+v; ctl said %q; want kind %s", u, line, tt.kind)
			}
			if !s.running() {
				t.Fatalf("supervisor exited after a failed upgrade: %v", s.Err())
			}
			if rec := probe(t, url); rec.PID != first.pids[0] || rec.Version != "v1" {
				t.Errorf("after the failed upgrade: answered by pid %d version %q, want the old pid %d v1", rec.PID, rec.Version, first.pids[0])
			}
			awaitAll(t, loads) // still served by the old generation

			st := statusOf(t, control)
			if st.Current.Gen != 1 || !sameSet(st.Current.pids(), first.pids) || st.Upgrading != nil ||
				st.LastUpgrade == nil || st.LastUpgrade.OK || st.LastUpgrade.Gen != 2 || st.LastUpgrade.Kind != string(tt.kind) ||
				!strings.Contains(st.LastUpgrade.Reason, u.Reason) {
				t.Errorf("status after the failure: current %+v, upgrading %+v, last upgrade %+v; want generation 1 %v, generation 2 failed: %s",
					st.Current, st.Upgrading, st.LastUpgrade, first.pids, u.Reason)
			}
			if text := ctlOK(t, control, "status").stdout; !strings.Contains(text, "last upgrade: FAILED at ") || !strings.Contains(text, u.Reason) {
				t.Errorf("ctl status does not show the failure:\n%s", text)
			}
			for i, run := range loads {
				noFailures(t, fmt.Sprint("load ", i), run.Stop())
			}
			ctlStop(t, s, control)
		})
	}
}

// TestCtlUnreachable proves that ctl without a supervisor to talk to says so
// in one line and exits 1, whatever the command.
func TestCtlUnreachable(t *testing.T) {
	needBinaries(t)
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // the socket file stays, with nobody behind it
	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		name, control string
		want          []string
	}{
		{"missing", missing, []string{"no control socket at " + missing}},
		{"stale", stale, []string{stale, "nobody listens"}},
		{"not a socket", regular, []string{regular}},
		{"no path", "", []string{"--control"}},
	}
	for _, tt := range tests {
		for _, args := range [][]string{{"status"}, {"status", "--json"}, {"upgrade", "--wait"}, {"stop"}} {
			t.Run(tt.name+" "+strings.Join(args, " "), func(t *testing.T) {
				line := ctlFails(t, tt.control, args, tt.want...)
				t.Logf("%s", line)
			})
		}
	}
}

// controlDial connects to the control socket at path.
func controlDial(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readResponse reads one response line from c within d.
func readResponse(c net.Conn, d time.Duration) (controlResponse, error) {
	c.SetReadDeadline(time.Now().Add(d))
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return controlResponse{}, fmt.Errorf("no response: %w (read %q)", err, line)
	}
	var r controlResponse
	if err := json.Unmarshal(line, &r); err != nil {
		return controlResponse{}, fmt.Errorf("malformed response %q: %w", line, err)
	}
	return r, nil
}

// exchange sends payload on a new connection to path and reads the answer.
// The server may answer (busy, refused) and close before it has read the
// request: the answer is read even when sending failed. It may run on any
// goroutine.
func exchange(path string, payload []byte, d time.Duration) (controlResponse, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return controlResponse{}, err
	}
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(d))
	_, werr := c.Write(payload)
	r, err := readResponse(c, d)
	if err != nil && werr != nil {
		return r, fmt.Errorf("sending %d bytes: %v; %w", len(payload), werr, err)
	}
	return r, err
}

// openGate lets the gate helper at the FIFO path become ready.
func openGate(t *testing.T, path string) {
	t.Helper()
	opened := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(path, os.O_WRONLY, 0) // blocks until the helper opens it
		if err == nil {
			_, err = f.Write([]byte("go\n"))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		opened <- err
	}()
	select {
	case err := <-opened:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(waitBound):
		// Release the blocked open: a reader of our own.
		if f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
			defer f.Close()
		}
		t.Fatalf("no gate worker opened %s within %v", path, waitBound)
	}
}

// TestControlAbuse proves that what a client may do wrong on the control
// socket (garbage, a request over the size limit, a client that sends
// nothing or half a request, floodConns connections and floodCtls ctl runs
// at once) gets an error
// answer or a "busy" one, never hangs past the request timeout, and costs
// nothing to an upgrade under way (asked for with `ctl upgrade --wait`, and
// held open by a worker that waits at a gate), nor to the load it serves.
func TestControlAbuse(t *testing.T) {
	dir := publicTempDir(t)
	sock, gate := filepath.Join(dir, "control"), filepath.Join(dir, "gate")
	if err := syscall.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	s := startSupervisor(t, supervisorConfig{binary: pathfindV1,
		env:   []string{helperEnv + "=gate", gateEnv + "=" + gate}, // pathfind ignores them
		flags: goodFlags("--control", sock)})
	addr := s.waitListening("http")
	s.waitReady(1)
	url := pathURL(t, addr)
	loads := startBothModes(t, url)
	awaitAll(t, loads)

	// An upgrade under way: generation 2 waits at the gate.
	s.install(helperBin, 0o755)
	mark := s.Log.Len()
	type result struct {
		r   ctlRun
		err error
	}
	upgraded := make(chan result, 1)
	go func() {
		r, err := execCtl(supervisorBin, nil, sock, "upgrade", "--wait")
		upgraded <- result{r, err}
	}()
	s.waitFor(mark, waitBound, "upgrade started", msg("upgrade started", []string{"gen"}, genIs(2)))
	s.waitFor(mark, waitBound, "control request for the upgrade", msg("control request", []string{"cmd"}, func(e procwatch.Entry) bool {
		return e.Str("cmd") == "upgrade"
	}))

	// Clients that send nothing, or half a request, hold their slot until
	// the request timeout.
	silent := controlDial(t, sock)
	partial := controlDial(t, sock)
	slowSince := time.Now()
	if _, err := partial.Write([]byte(`{"cmd":"sta`)); err != nil {
		t.Fatal(err)
	}

	bad := []struct {
		name    string
		payload []byte
		want    string
	}{
		{"text", []byte("hello\n"), "malformed request"},
		{"binary", []byte("\x00\x01\x02\xff\xfe\n"), "malformed request"},
		{"empty line", []byte("\n"), "malformed request"},
		{"JSON array", []byte("[1,2,3]\n"), "malformed request"},
		{"unknown field", []byte(`{"cmd":"status","force":true}` + "\n"), "malformed request"},
		{"unknown command", []byte(`{"cmd":"reboot"}` + "\n"), `unknown command "reboot"`},
		{"oversized line", append([]byte(`{"cmd":"status","pad":"`+strings.Repeat("x", control.MaxRequest)), "\"}\n"...), fmt.Sprintf("longer than %d bytes", control.MaxRequest)},
		{"oversized, no newline", bytes.Repeat([]byte("x"), 2*control.MaxRequest), fmt.Sprintf("longer than %d bytes", control.MaxRequest)},
	}
	for _, b := range bad {
		r, err := exchange(sock, b.payload, waitBound)
		if err != nil {
			t.Errorf("%s: %v", b.name, err)
			continue
		}
		if r.OK || !strings.Contains(r.Error, b.want) {
			t.Errorf("%s: answer %+v, want an error saying %q", b.name, r, b.want)
		}
	}

	// floodConns clients at once, each asking for the status.
	var wg sync.WaitGroup
	answers := make([]controlResponse, floodConns)
	errs := make([]error, floodConns)
	for i := range floodConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i], errs[i] = exchange(sock, []byte(`{"cmd":"status"}`+"\n"), waitBound)
		}()
	}
	// And a few clients of the command line among them: answered, or told
	// in one line that the supervisor is busy.
	ctlRuns := make([]ctlRun, floodCtls)
	ctlErrs := make([]error, floodCtls)
	for i := range floodCtls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctlRuns[i], ctlErrs[i] = execCtl(supervisorBin, nil, sock, "status")
		}()
	}
	wg.Wait()
	ctlBusy := 0
	for i, r := range ctlRuns {
		switch {
		case ctlErrs[i] != nil:
			t.Errorf("ctl status in the flood: %v", ctlErrs[i])
		case r.code == 0 && strings.Contains(r.stdout, fmt.Sprintf("supervisor pid %d", s.PID)):
		case r.code == 1 && strings.Contains(oneLine(t, r.stderr), "busy"):
			ctlBusy++
		default:
			t.Errorf("ctl status in the flood: %v", r)
		}
	}
	served, busy := 0, ctlBusy
	for i, r := range answers {
		switch {
		case errs[i] != nil:
			t.Errorf("flood connection %d: %v", i, errs[i])
		case r.OK && r.Status != nil && r.Status.PID == s.PID && r.Status.Current != nil && r.Status.Current.Gen == 1 &&
			r.Status.Upgrading != nil && r.Status.Upgrading.Gen == 2:
			served++
		case !r.OK && strings.Contains(r.Error, "busy"):
			busy++
		default:
			t.Errorf("flood connection %d: unexpected answer %+v", i, r)
		}
	}
	t.Logf("%d connections and %d ctl runs at once: %d connections served, %d turned away as busy (%d of them ctl runs)",
		floodConns, floodCtls, served, busy, ctlBusy)
	if served == 0 {
		t.Errorf("no connection of the flood was served")
	}

	select {
	case res := <-upgraded:
		t.Fatalf("upgrade --wait ended while its worker waited at the gate: %v, %v", res.r, res.err)
	default:
	}
	if !s.running() {
		t.Fatalf("supervisor exited: %v", s.Err())
	}

	// Let generation 2 become ready: the upgrade --wait under way succeeds.
	openGate(t, gate)
	var res result
	select {
	case res = <-upgraded:
	case <-time.After(ctlBound):
		t.Fatalf("upgrade --wait did not end within %v of the gate opening", ctlBound)
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.r.code != 0 || !strings.Contains(res.r.stdout, "generation 2 is ready and serving") {
		t.Fatalf("upgrade --wait under abuse: %v", res.r)
	}
	u := s.waitOutcome(mark, 2)
	s.waitDrained(mark, 1)
	if rec := probe(t, url); rec.PID != u.PIDs[0] || rec.Version != "gate" {
		t.Errorf("after the upgrade: answered by pid %d version %q, want the gate worker %d", rec.PID, rec.Version, u.PIDs[0])
	}

	// The silent and the partial client are answered at the request timeout.
	for name, c := range map[string]*net.UnixConn{"silent": silent, "partial": partial} {
		r, err := readResponse(c, control.RequestTimeout+waitBound)
		took := time.Since(slowSince)
		if err != nil {
			t.Errorf("%s client: %v", name, err)
			continue
		}
		t.Logf("%s client answered after %v: %s", name, took.Round(time.Millisecond), r.Error)
		if r.OK || !strings.Contains(r.Error, "no complete request within "+control.RequestTimeout.String()) {
			t.Errorf("%s client: answer %+v, want the request timeout", name, r)
		}
		if took < control.RequestTimeout*9/10 {
			t.Errorf("%s client answered after %v, before the request timeout %v", name, took, control.RequestTimeout)
		}
	}

	st := statusOf(t, sock)
	if st.Current.Gen != 2 || st.LastUpgrade == nil || !st.LastUpgrade.OK {
		t.Errorf("status after the abuse: current %+v, last upgrade %+v", st.Current, st.LastUpgrade)
	}
	// Every bad request but the unknown command, and the two slow clients,
	// were refused and logged; every busy answer was logged.
	isRefused := func(e procwatch.Entry) bool { return e.Is("control request refused") }
	isTurnedAway := func(e procwatch.Entry) bool {
		return e.Is("control socket: too many connections at once; one turned away")
	}
	if n, want := waitCount(s, mark, len(bad)-1+2, isRefused), len(bad)-1+2; n != want {
		t.Errorf("%d \"control request refused\" lines, want %d", n, want)
	}
	if n := waitCount(s, mark, busy, isTurnedAway); n != busy {
		t.Errorf("%d \"turned away\" lines, %d busy answers", n, busy)
	}
	for i, run := range loads {
		noFailures(t, fmt.Sprint("load ", i), run.Stop())
	}
	checkNoZombies(t, s)
}

// waitCount waits, up to waitBound, for n lines from index from on that
// match accepts, and returns how many there are then.
func waitCount(s *supervisor, from, n int, match func(procwatch.Entry) bool) int {
	for i := from; n > 0; n-- {
		_, j, ok := s.find(i, waitBound, match)
		if !ok {
			break
		}
		i = j + 1
	}
	count := 0
	for _, e := range s.Log.All()[from:] {
		if match(e) {
			count++
		}
	}
	return count
}

// TestCtlOtherUser proves that the control socket is mode 0600 and that a
// client of another user, even one that can connect (the test opens the
// socket's mode to it), is refused and logged, and changes nothing.
func TestCtlOtherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run a client as another user")
	}
	dir := publicTempDir(t)
	control := filepath.Join(dir, "control")
	bin := filepath.Join(dir, "supervisor") // where that user may run it
	if err := copyFile(bin, supervisorBin, 0o755); err != nil {
		t.Fatal(err)
	}
	s := startSupervisor(t, supervisorConfig{binary: pathfindV1, flags: goodFlags("--control", control)})
	addr := s.waitListening("http")
	first := s.waitReady(1)
	checkControlSocket(t, control)
	nobody := &syscall.Credential{Uid: nobodyUID, Gid: nobodyUID}
	asNobody := func(args ...string) ctlRun {
		t.Helper()
		r, err := execCtl(bin, nobody, control, args...)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	// Mode 0600: the kernel keeps the other user out.
	line := checkCtlFailure(t, asNobody("status"), "permission denied")
	t.Logf("uid %d, socket mode 0600: %s", nobodyUID, line)

	// Open to anyone: the supervisor itself refuses by the peer's uid, and
	// the client shows why. Each command a few times: the refusal is
	// written as soon as the client connects, and races with its request.
	if err := os.Chmod(control, 0o666); err != nil {
		t.Fatal(err)
	}
	var tries [][]string
	for range refusalTries {
		tries = append(tries, []string{"status"}, []string{"upgrade", "--wait"}, []string{"stop"})
	}
	for _, args := range tries {
		mark := s.Log.Len()
		line := checkCtlFailure(t, asNobody(args...), "permission denied", strconv.Itoa(nobodyUID))
		t.Logf("uid %d, ctl %s: %s", nobodyUID, strings.Join(args, " "), line)
		e, _ := s.waitFor(mark, waitBound, "refusal", func(e procwatch.Entry) bool {
			return strings.HasPrefix(e.Msg(), "control request refused") && e.Int("uid") == nobodyUID
		})
		t.Logf("logged: %s", e.Raw)
	}
	if !s.running() {
		t.Fatalf("supervisor exited: %v", s.Err())
	}
	st := statusOf(t, control) // root may
	if st.Current.Gen != 1 || !sameSet(st.Current.pids(), first.pids) || st.LastUpgrade != nil || st.Stopping {
		t.Errorf("after the refused requests: current %+v, last upgrade %+v, stopping %v; want generation 1 untouched",
			st.Current, st.LastUpgrade, st.Stopping)
	}
	if rec := probe(t, "http://"+addr+"/healthz"); rec.PID != first.pids[0] {
		t.Errorf("answered by pid %d, want the first worker %d", rec.PID, first.pids[0])
	}
}

// TestCtlStopWait proves that `ctl stop --wait` returns only once every
// worker has drained and the supervisor has exited.
func TestCtlStopWait(t *testing.T) {
	control := filepath.Join(t.TempDir(), "control")
	s := startSupervisor(t, supervisorConfig{binary: pathfindV1, flags: goodFlags("--workers", "2", "--control", control)})
	s.waitListening("http")
	first := s.waitReady(1)
	workers := watchAll(t, first.pids)
	r := ctlOK(t, control, "stop", "--wait")
	if r.stdout != "stopped: every worker has drained\n" {
		t.Errorf("stop --wait said %q", r.stdout)
	}
	// The supervisor is our child: exited, it is a zombie until we wait.
	if st, err := procwatch.ReadStat(s.PID); err == nil && st.State != 'Z' {
		t.Errorf("ctl stop --wait returned while the supervisor %d still runs (state %c)", s.PID, st.State)
	}
	for _, w := range workers {
		if !w.Wait(0) {
			t.Errorf("ctl stop --wait returned while worker %d still runs", w.PID())
		}
	}
	select {
	case <-s.Done():
	case <-time.After(stopBound):
		t.Fatalf("supervisor did not exit within %v", stopBound)
	}
	if s.Err() != nil {
		t.Errorf("supervisor exited with %v, want 0", s.Err())
	}
}
