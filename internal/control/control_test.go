package control

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/internal/history"
	"github.com/procswitch/supervisor/internal/supervisor"
	"github.com/rs/zerolog"
)

// bound is the bound of every wait that should succeed.
const bound = 10 * time.Second

// dialEnv makes the test binary a client instead: it sends {"cmd":
// $CONTROL_TEST_CMD} to the socket $CONTROL_TEST_DIAL with Do and prints the
// outcome as one JSON line (see dialOutcome). TestRefusesOtherUsers runs it
// as another user.
const dialEnv = "CONTROL_TEST_DIAL"

type dialOutcome struct {
	Response Response `json:"response"`
	Err      string   `json:"err,omitempty"`
}

func TestMain(m *testing.M) {
	if path := os.Getenv(dialEnv); path != "" {
		var out dialOutcome
		resp, err := Do(path, Request{Cmd: os.Getenv("CONTROL_TEST_CMD")}, bound)
		out.Response = resp
		if err != nil {
			out.Err = err.Error()
		}
		json.NewEncoder(os.Stdout).Encode(out)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fake is the supervisor the control socket drives in these tests.
type fake struct {
	status    supervisor.Status
	down      atomic.Bool                 // Status says the supervisor is shutting down
	upgrades  chan chan supervisor.Result // each Upgrade's result channel, for the test to answer
	rollbacks chan rollback               // each Rollback's, with its to

	mu    sync.Mutex
	stops int

	reloaded *supervisor.Result // what Reload answers; nil: nothing yet
}

func newFake() *fake {
	return &fake{status: supervisor.Status{PID: 4242, Mode: "overlap", Current: &supervisor.GenStatus{
		Gen: 3, Phase: "serving", Binary: "/srv/app", Version: "0123456789ab",
		Workers: []supervisor.WorkerStatus{{PID: 4300, Ready: true}},
	}}, upgrades: make(chan chan supervisor.Result, 64), rollbacks: make(chan rollback, 64)}
}

// rollback is one call of Rollback: its argument and its result channel.
type rollback struct {
	to     int
	result chan supervisor.Result
}

func (f *fake) Rollback(to int) <-chan supervisor.Result {
	r := make(chan supervisor.Result, 1)
	f.rollbacks <- rollback{to: to, result: r}
	return r
}

// rollback waits for the next Rollback call.
func (f *fake) rollback(t *testing.T) rollback {
	t.Helper()
	select {
	case r := <-f.rollbacks:
		return r
	case <-time.After(bound):
		t.Fatal("no rollback was asked for")
		return rollback{}
	}
}

// Reload answers at once with f.reloaded, or never when it is nil.
func (f *fake) Reload(string) <-chan supervisor.Result {
	r := make(chan supervisor.Result, 1)
	if f.reloaded != nil {
		r <- *f.reloaded
	}
	return r
}

func (f *fake) Status() (supervisor.Status, bool) { return f.status, !f.down.Load() }

func (f *fake) UpgradeBy(string) <-chan supervisor.Result {
	r := make(chan supervisor.Result, 1)
	f.upgrades <- r
	return r
}

func (f *fake) Stop() {
	f.mu.Lock()
	f.stops++
	f.mu.Unlock()
}

func (f *fake) stopped() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stops
}

// upgrade waits for the next Upgrade call and returns its result channel.
func (f *fake) upgrade(t *testing.T) chan supervisor.Result {
	t.Helper()
	select {
	case r := <-f.upgrades:
		return r
	case <-time.After(bound):
		t.Fatal("no upgrade was asked for")
		return nil
	}
}

// logBuffer collects the server's log lines; handlers log concurrently.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines returns the logged lines whose message starts with prefix.
func (l *logBuffer) lines(prefix string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(l.b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && strings.HasPrefix(fmt.Sprint(m["message"]), prefix) {
			out = append(out, m)
		}
	}
	return out
}

// server is a control server on a fake supervisor.
type server struct {
	*Server
	path string
	sup  *fake
	log  *logBuffer
}

// serve starts a control server in dir (a new temporary one when "") and
// closes it at the end of the test.
func serve(t *testing.T, dir string) *server {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	path := filepath.Join(dir, "control")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{path: path, sup: newFake(), log: &logBuffer{}}
	s.Server = NewServer(ln, path, s.sup, zerolog.New(s.log))
	t.Cleanup(func() { s.Close() })
	return s
}

// exchange sends payload on a new connection and reads the one answer line,
// even when the server answered and closed before reading the payload.
func exchange(t *testing.T, path string, payload []byte) (Response, error) {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(bound))
	c.Write(payload)
	return readAnswer(c)
}

func readAnswer(c net.Conn) (Response, error) {
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return Response{}, fmt.Errorf("no answer: %w (read %q)", err, line)
	}
	var r Response
	if err := json.Unmarshal(line, &r); err != nil {
		return Response{}, fmt.Errorf("malformed answer %q: %w", line, err)
	}
	return r, nil
}

func TestListen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "control")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v, %v; want a socket of mode 0600", fi.Mode(), err)
	}
	srv := NewServer(ln, path, newFake(), zerolog.Nop())

	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("Listen on a live socket: %v, want an error saying it is in use", err)
	}
	srv.Close()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after Close: %v, want it removed", err)
	}

	// A stale socket file (its supervisor died) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	ln, err = Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	// Handed over to a successor: Close leaves the file.
	srv = NewServer(ln, path, newFake(), zerolog.Nop())
	srv.HandOver()
	srv.Close()
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("socket file after HandOver and Close: %v, want it left", err)
	}

	// Anything else in the way is not removed.
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a regular file: %v, want an error saying it is not a socket", err)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep" {
		t.Errorf("the regular file in the way: %q, %v", b, err)
	}
}

func TestRequests(t *testing.T) {
	s := serve(t, "")
	do := func(req Request) Response {
		t.Helper()
		resp, err := Do(s.path, req, bound)
		if err != nil {
			t.Fatalf("%+v: %v", req, err)
		}
		return resp
	}

	if r := do(Request{Cmd: CmdStatus}); !r.OK || r.Status == nil || r.Status.PID != 4242 || r.Status.Current.Gen != 3 {
		t.Errorf("status: %+v", r)
	}
	if r := do(Request{Cmd: CmdMetrics}); r.OK || r.Error != "this supervisor serves no metrics" {
		t.Errorf("metrics without WithMetrics: %+v", r)
	}
	if r := do(Request{Cmd: CmdStop}); !r.OK || s.sup.stopped() != 1 {
		t.Errorf("stop: %+v, %d stops", r, s.sup.stopped())
	}
	// Without --wait: answered once asked, whatever the upgrade does.
	if r := do(Request{Cmd: CmdUpgrade}); !r.OK || r.Gen != 0 || r.Error != "" {
		t.Errorf("upgrade: %+v", r)
	}
	s.sup.upgrade(t)

	// With --wait: answered with the result.
	for _, res := range []supervisor.Result{{Gen: 4}, {Gen: 5, Err: errors.New("upgrade to generation 5 failed: worker 77 exited before it was ready: exit status 1")}} {
		answered := make(chan Response, 1)
		go func() {
			r, _ := Do(s.path, Request{Cmd: CmdUpgrade, Wait: true}, bound)
			answered <- r
		}()
		s.sup.upgrade(t) <- res
		r := <-answered
		if r.Gen != res.Gen || r.OK != (res.Err == nil) || (res.Err != nil && r.Error != res.Err.Error()) {
			t.Errorf("upgrade --wait with result %+v: %+v", res, r)
		}
	}

	s.sup.down.Store(true)
	if r := do(Request{Cmd: CmdStatus}); r.OK || !strings.Contains(r.Error, "shutting down") {
		t.Errorf("status while shutting down: %+v", r)
	}
	s.sup.down.Store(false)

	for _, tc := range []struct {
		name    string
		payload string
		want    string
	}{
		{"unknown command", `{"cmd":"reboot"}` + "\n", `unknown command "reboot"`},
		{"text", "status\n", "malformed request"},
		{"empty line", "\n", "malformed request"},
		{"unknown field", `{"cmd":"status","force":true}` + "\n", "malformed request"},
		{"wrong type", `{"cmd":1}` + "\n", "malformed request"},
		{"two objects", `{"cmd":"status"}{"cmd":"stop"}` + "\n", ""}, // the first one counts
		{"one byte over", `{"cmd":"status"}` + strings.Repeat(" ", MaxRequest-len(`{"cmd":"status"}`)+1) + "\n", fmt.Sprintf("longer than %d bytes", MaxRequest)},
		{"far over, no newline", strings.Repeat("x", 4*MaxRequest), fmt.Sprintf("longer than %d bytes", MaxRequest)},
	} {
		r, err := exchange(t, s.path, []byte(tc.payload))
		switch {
		case err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want == "" && !r.OK:
			t.Errorf("%s: %+v, want it answered", tc.name, r)
		case tc.want != "" && (r.OK || !strings.Contains(r.Error, tc.want)):
			t.Errorf("%s: %+v, want an error saying %q", tc.name, r, tc.want)
		}
	}
	if n := s.sup.stopped(); n != 1 {
		t.Errorf("%d stops, want only the one asked for", n)
	}
	// At the limit exactly: still a request.
	exact := `{"cmd":"status"}` + strings.Repeat(" ", MaxRequest-len(`{"cmd":"status"}`))
	if r, err := exchange(t, s.path, []byte(exact+"\n")); err != nil || !r.OK {
		t.Errorf("a request of exactly %d bytes: %+v, %v", MaxRequest, r, err)
	}
	if refused := s.log.lines("control request refused"); len(refused) != 6 {
		t.Errorf("%d refusals logged, want 6", len(refused))
	}
}

// TestUpgradeWaitBlocksNothing: while a client waits for an upgrade, others
// are served, more of them than there are slots.
func TestUpgradeWaitBlocksNothing(t *testing.T) {
	s := serve(t, "")
	answered := make(chan Response, 1)
	go func() {
		r, _ := Do(s.path, Request{Cmd: CmdUpgrade, Wait: true}, 2*bound)
		answered <- r
	}()
	result := s.sup.upgrade(t)
	for i := range 2 * MaxConns {
		if r, err := Do(s.path, Request{Cmd: CmdStatus}, bound); err != nil || !r.OK {
			t.Fatalf("status %d while an upgrade --wait waits: %+v, %v", i, r, err)
		}
	}
	select {
	case r := <-answered:
		t.Fatalf("upgrade --wait answered before the upgrade ended: %+v", r)
	default:
	}
	result <- supervisor.Result{Gen: 9}
	if r := <-answered; !r.OK || r.Gen != 9 {
		t.Errorf("upgrade --wait: %+v", r)
	}
}

// TestBusy: with MaxConns connections being served, the next one is turned
// away at once with an answer, and logged.
func TestBusy(t *testing.T) {
	s := serve(t, "")
	var held []net.Conn
	for range MaxConns {
		c, err := net.Dial("unix", s.path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c) // sends nothing: holds its slot
	}
	began := time.Now()
	r, err := exchange(t, s.path, []byte(`{"cmd":"status"}`+"\n"))
	if err != nil || r.OK || !strings.HasPrefix(r.Error, "busy") {
		t.Fatalf("connection %d: %+v, %v; want a busy answer", MaxConns+1, r, err)
	}
	if d := time.Since(began); d > RequestTimeout/2 {
		t.Errorf("busy answer after %v", d)
	}
	if n := len(s.log.lines("control socket: too many connections")); n != 1 {
		t.Errorf("%d turned-away lines logged, want 1", n)
	}
	// Once they hang up, each is answered (an error) and its slot freed.
	for _, c := range held {
		c.(*net.UnixConn).CloseWrite()
		if r, err := readAnswer(c); err != nil || r.OK {
			t.Errorf("held connection hanging up: %+v, %v", r, err)
		}
		c.Close()
	}
	// The last slot is freed just after its connection closes; the server
	// says "busy" meanwhile, and so to try again.
	for try := 1; ; try++ {
		r, err := Do(s.path, Request{Cmd: CmdStatus}, bound)
		if err == nil && r.OK {
			break
		}
		if try == 100 || (err == nil && !strings.HasPrefix(r.Error, "busy")) {
			t.Fatalf("status once the slots are free: %+v, %v", r, err)
		}
	}
}

// TestSlowClients: a client that sends nothing, or not a whole request line,
// is answered with an error at RequestTimeout; a request without its newline
// is not carried out.
func TestSlowClients(t *testing.T) {
	t.Parallel()
	s := serve(t, "")
	clients := []struct {
		name, sent string
	}{
		{"silent", ""},
		{"half a request", `{"cmd":"sta`},
		{"a request without its newline", `{"cmd":"stop"}`},
	}
	conns := make([]net.Conn, len(clients))
	began := time.Now()
	for i, c := range clients {
		conn, err := net.Dial("unix", s.path)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(RequestTimeout + bound))
		if _, err := conn.Write([]byte(c.sent)); err != nil {
			t.Fatal(err)
		}
		conns[i] = conn
	}
	want := "no complete request within " + RequestTimeout.String()
	for i, c := range clients {
		r, err := readAnswer(conns[i])
		took := time.Since(began)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		t.Logf("%s: answered after %v: %+v", c.name, took.Round(time.Millisecond), r)
		if r.OK || r.Error != want {
			t.Errorf("%s: answer %+v, want the error %q", c.name, r, want)
		}
		if took < RequestTimeout*9/10 {
			t.Errorf("%s: answered after %v, before the request timeout %v", c.name, took, RequestTimeout)
		}
	}
	if n := s.sup.stopped(); n != 0 {
		t.Errorf("a stop request without its newline, never completed, stopped the supervisor")
	}
}

func TestDoErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Do("", Request{Cmd: CmdStatus}, bound); !errors.Is(err, ErrNoPath) {
		t.Errorf("Do without a path: %v, want ErrNoPath", err)
	}
	missing := filepath.Join(dir, "missing")
	if _, err := Do(missing, Request{Cmd: CmdStatus}, bound); err == nil || !strings.Contains(err.Error(), "no control socket at "+missing) {
		t.Errorf("Do on a missing socket: %v", err)
	}
	stale := filepath.Join(dir, "stale")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := Do(stale, Request{Cmd: CmdStatus}, bound); err == nil || !strings.Contains(err.Error(), "nobody listens") {
		t.Errorf("Do on a stale socket: %v", err)
	}

	// Servers that misbehave: silent, garbage, hanging up.
	for _, tc := range []struct {
		name   string
		answer func(net.Conn)
		want   string
	}{
		{"silent", func(c net.Conn) { io.Copy(io.Discard, c) }, "no answer within"},
		{"garbage", func(c net.Conn) { c.Write([]byte("<html>\n")) }, "malformed answer"},
		{"hangs up", func(c net.Conn) {}, "reading the answer"},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			bufio.NewReader(c).ReadBytes('\n')
			tc.answer(c)
		}()
		began := time.Now()
		_, err = Do(path, Request{Cmd: CmdStatus}, 300*time.Millisecond)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s server: %v, want an error saying %q", tc.name, err, tc.want)
		}
		if d := time.Since(began); d > bound/2 {
			t.Errorf("%s server: Do took %v", tc.name, d)
		}
		ln.Close()
	}
}

// TestRefusesOtherUsers runs clients as another user (the socket's mode
// opened to it): each is refused with an answer that says why, changes
// nothing, and the refusal is logged with its uid.
func TestRefusesOtherUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run a client as another user")
	}
	const nobody = 65534
	dir, err := os.MkdirTemp("", "control-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "control.test") // where that user may run it
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	s := serve(t, dir)
	if err := os.Chmod(s.path, 0o666); err != nil {
		t.Fatal(err)
	}
	const tries = 4 // each command: the refusal races with the request
	for i := range 3 * tries {
		cmd := []string{CmdStatus, CmdUpgrade, CmdStop}[i%3]
		c := exec.Command(bin)
		c.Env = append(os.Environ(), dialEnv+"="+s.path, "CONTROL_TEST_CMD="+cmd,
			"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")) // else a -race build sleeps 1s at exit
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		out, err := c.Output()
		if err != nil {
			t.Fatalf("client as uid %d: %v", nobody, err)
		}
		var o dialOutcome
		if err := json.Unmarshal(out, &o); err != nil {
			t.Fatalf("client output %q: %v", out, err)
		}
		want := fmt.Sprintf("permission denied: uid %d", nobody)
		if o.Err != "" || o.Response.OK || !strings.Contains(o.Response.Error, want) {
			t.Errorf("%s as uid %d: answer %+v, error %q; want the answer %q", cmd, nobody, o.Response, o.Err, want)
		}
	}
	if len(s.sup.upgrades) != 0 || s.sup.stopped() != 0 {
		t.Errorf("refused clients made %d upgrades and %d stops", len(s.sup.upgrades), s.sup.stopped())
	}
	refused := s.log.lines("control request refused: only root")
	if len(refused) != 3*tries {
		t.Errorf("%d refusals logged, want %d", len(refused), 3*tries)
	}
	for _, m := range refused {
		if m["uid"] != float64(nobody) {
			t.Errorf("refusal logged with uid %v, want %d", m["uid"], nobody)
		}
	}
}

// TestRollback: rollback asks the supervisor for the generation given (0:
// the one before) and answers as upgrade does, at once or with the result.
func TestRollback(t *testing.T) {
	s := serve(t, "")
	if r, err := Do(s.path, Request{Cmd: CmdRollback}, bound); err != nil || !r.OK || r.Gen != 0 {
		t.Errorf("rollback: %+v, %v", r, err)
	}
	if rb := s.sup.rollback(t); rb.to != 0 {
		t.Errorf("rollback without to asked for generation %d, want 0 (the one before)", rb.to)
	}
	refusal := &supervisor.UpgradeError{Kind: supervisor.KindRefused,
		Reason: "generation 9's binary is not held (held: generation 3, 2; --keep-versions keeps more)"}
	for _, tc := range []struct {
		to     int
		result supervisor.Result
	}{
		{0, supervisor.Result{Gen: 4}},
		{2, supervisor.Result{Gen: 5}},
		{9, supervisor.Result{Err: refusal}},
	} {
		answered := make(chan Response, 1)
		go func() {
			r, _ := Do(s.path, Request{Cmd: CmdRollback, To: tc.to, Wait: true}, bound)
			answered <- r
		}()
		rb := s.sup.rollback(t)
		if rb.to != tc.to {
			t.Errorf("rollback --to %d asked the supervisor for %d", tc.to, rb.to)
		}
		select {
		case r := <-answered:
			t.Fatalf("rollback --wait answered before the result: %+v", r)
		default:
		}
		rb.result <- tc.result
		r := <-answered
		switch {
		case tc.result.Err == nil && (!r.OK || r.Gen != tc.result.Gen || r.Error != ""):
			t.Errorf("rollback --to %d --wait with %+v: %+v", tc.to, tc.result, r)
		case tc.result.Err != nil && (r.OK || r.Error != refusal.Error() || r.Kind != string(supervisor.KindRefused)):
			t.Errorf("refused rollback: %+v, want the refusal with kind refused", r)
		}
	}
	if r, err := Do(s.path, Request{Cmd: CmdRollback, To: -1}, bound); err != nil || r.OK || !strings.Contains(r.Error, "positive") {
		t.Errorf("rollback to -1: %+v, %v; want an error", r, err)
	}
	select {
	case rb := <-s.sup.rollbacks:
		t.Errorf("rollback to -1 reached the supervisor: %+v", rb)
	default:
	}
	if got := s.log.lines("control request"); len(got) == 0 || got[len(got)-1]["to"] != float64(-1) {
		t.Errorf("control request lines %v, want the last with to -1", got)
	}
}

// TestHistory: history answers the last n records of the Log given, oldest
// first, with the unreadable lines counted; without a Log, ErrNoHistory.
func TestHistory(t *testing.T) {
	s := serve(t, "")
	if r, err := Do(s.path, Request{Cmd: CmdHistory}, bound); err != nil || r.OK || r.Error != ErrNoHistory.Error() {
		t.Errorf("history without a Log: %+v, %v; want %q", r, err, ErrNoHistory)
	}

	dir := t.TempDir()
	h, err := history.Open(dir, history.Options{})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	total := DefaultHistory + 5
	for i := range total {
		h.Append(history.Record{Time: at.Add(time.Duration(i) * time.Minute), Event: history.EventUpgrade,
			Trigger: history.TriggerCtl, Gen: i + 1, FromGen: i, Result: history.ResultOK})
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	// A torn line at the end, as a crash leaves it.
	f, err := os.OpenFile(filepath.Join(dir, history.FileName), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"time":"2026-12-01T12:00:00Z","event":"upgr`)
	f.Close()

	path := filepath.Join(t.TempDir(), "control")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(ln, path, newFake(), zerolog.Nop(), WithHistory(h))
	defer srv.Close()
	for _, tc := range []struct{ n, want int }{{0, DefaultHistory}, {3, 3}, {-1, total}, {total + 10, total}} {
		r, err := Do(path, Request{Cmd: CmdHistory, N: tc.n}, bound)
		if err != nil || !r.OK || len(r.History) != tc.want || r.Skipped != 1 {
			t.Errorf("history n=%d: %d records, %d skipped, %q, %v; want %d and 1 skipped", tc.n, len(r.History), r.Skipped, r.Error, err, tc.want)
			continue
		}
		for i, rec := range r.History {
			if gen := total - tc.want + i + 1; rec.Gen != gen || !rec.Time.Equal(at.Add(time.Duration(gen-1)*time.Minute)) {
				t.Errorf("history n=%d: record %d is generation %d at %v, want %d, oldest first", tc.n, i, rec.Gen, rec.Time, gen)
			}
		}
	}
}
