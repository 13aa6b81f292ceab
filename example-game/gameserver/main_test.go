package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/handoff"
	"github.com/procswitch/supervisor/handoff/handover"
)

// The test binary doubles as the game server: with helperEnv set, TestMain
// runs main's run with the given arguments instead of the tests.
const (
	helperEnv        = "GAMESERVER_TEST_HELPER"
	helperVersionEnv = "GAMESERVER_TEST_VERSION"
)

const (
	waitBound  = 20 * time.Second // every wait for a process, a reply or a log line
	buildBound = 5 * time.Minute  // go build of the three binaries
)

// Binaries TestMain builds: the supervisor and both variants of the game.
var bins struct {
	dir, supervisor, buggy, fixed string
}

// The versions the two builds report.
const (
	buggyVersion = "v1-buggy"
	fixedVersion = "v2-fixed"
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
	case "fail-after-go":
		os.Exit(failAfterGo())
	default:
		version = os.Getenv(helperVersionEnv)
		os.Exit(run(os.Args[1:], os.Stderr))
	}
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "gameserver-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := buildAll(dir); err != nil {
		fmt.Fprintln(os.Stderr, "gameserver tests:", err)
		return 1
	}
	return m.Run()
}

// buildAll builds the supervisor and the buggy and fixed game servers, at
// once, with the race detector when the tests have it.
func buildAll(dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), buildBound)
	defer cancel()
	bins.dir = dir
	bins.supervisor = filepath.Join(dir, "supervisor")
	bins.buggy = filepath.Join(dir, "gameserver-buggy")
	bins.fixed = filepath.Join(dir, "gameserver-fixed")
	builds := [][]string{
		{"-o", bins.supervisor, "github.com/procswitch/supervisor/cmd/supervisor"},
		{"-o", bins.buggy, "-ldflags", "-X main.version=" + buggyVersion, "."},
		{"-o", bins.fixed, "-tags", "fixedshop", "-ldflags", "-X main.version=" + fixedVersion, "."},
	}
	errs := make([]error, len(builds))
	var wg sync.WaitGroup
	for i, args := range builds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = goBuild(ctx, args)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func goBuild(ctx context.Context, args []string) error {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go") // as go test sets it
	}
	if raceEnabled {
		args = append([]string{"-race"}, args...)
	}
	cmd := exec.CommandContext(ctx, goTool, append([]string{"build"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// failAfterGo is a new build that cannot restore: it waits for the
// handover like the game, then fails, so that the supervisor rolls back.
func failAfterGo() int {
	w, err := handoff.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fail-after-go:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	conns, err := handover.Await(ctx, w)
	fmt.Fprintf(os.Stderr, "fail-after-go: got %d connections (%v); failing to restore on purpose\n", len(conns), err)
	return 4
}

// cleanEnv is this process's environment without the worker contract's
// variables, in case the tests themselves run under a supervisor.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "LISTEN_"), strings.HasPrefix(k, "WATCHDOG_"),
			strings.HasPrefix(k, "SUPERVISOR_"), k == "NOTIFY_SOCKET", k == helperEnv:
			continue
		}
		env = append(env, kv)
	}
	return env
}

// logBook collects a process's stderr, line by line, and lets a test wait
// for a line without sleeping.
type logBook struct {
	mu      sync.Mutex
	lines   []string
	eof     bool
	changed chan struct{} // closed and replaced at every change
}

func newLogBook(r io.Reader) *logBook {
	l := &logBook{changed: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l.mu.Lock()
			l.lines = append(l.lines, sc.Text())
			close(l.changed)
			l.changed = make(chan struct{})
			l.mu.Unlock()
		}
		l.mu.Lock()
		l.eof = true
		close(l.changed)
		l.mu.Unlock()
	}()
	return l
}

// wait returns the first line from *at on that matches re, and moves *at
// past it. It fails the test if none comes within waitBound.
func (l *logBook) wait(t *testing.T, at *int, re *regexp.Regexp) []string {
	t.Helper()
	var m []string
	l.waitFunc(t, at, re.String(), func(line string) bool {
		m = re.FindStringSubmatch(line)
		return m != nil
	})
	return m
}

// waitFunc is wait with a predicate; what describes it for the failure.
func (l *logBook) waitFunc(t *testing.T, at *int, what string, match func(string) bool) {
	t.Helper()
	deadline := time.After(waitBound)
	for {
		l.mu.Lock()
		lines, eof, changed := l.lines, l.eof, l.changed
		l.mu.Unlock()
		for ; *at < len(lines); *at++ {
			if match(lines[*at]) {
				*at++
				return
			}
		}
		if eof {
			t.Fatalf("no log line %s before the process's stderr closed", what)
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no log line %s within %v", what, waitBound)
		}
	}
}

func (l *logBook) dump() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// proc is a running game server (or supervisor).
type proc struct {
	cmd    *exec.Cmd
	log    *logBook
	at     int           // the log lines read so far
	addr   string        // from the serving line
	exited chan struct{} // closed when it has exited
	err    error         // cmd.Wait's error, once exited is closed
}

var servingLine = regexp.MustCompile(`: serving on (\S+) \(`)

// startGame runs a game server on its own, on a free loopback port: bin,
// or the test binary when bin is "" (version "test"). It waits for the
// serving line.
func startGame(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	var env []string
	if bin == "" {
		bin = os.Args[0]
		env = []string{helperEnv + "=main", helperVersionEnv + "=test"}
	}
	p := startProc(t, bin, env, append([]string{"--listen", "127.0.0.1:0"}, args...)...)
	p.addr = p.log.wait(t, &p.at, servingLine)[1]
	return p
}

func startProc(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(cleanEnv(), env...)
	if raceEnabled {
		// A race-enabled binary sleeps 1s at exit by default.
		cmd.Env = append(cmd.Env, "GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	p := &proc{cmd: cmd, log: newLogBook(r), exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
		r.Close()
		if t.Failed() {
			t.Logf("%s log:\n%s", filepath.Base(bin), p.log.dump())
		}
	})
	return p
}

// stop sends sig and waits for a clean exit.
func (p *proc) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(waitBound):
		t.Fatalf("pid %d still running %v after %v", p.cmd.Process.Pid, waitBound, sig)
	}
	if p.err != nil {
		t.Fatalf("pid %d: %v; log:\n%s", p.cmd.Process.Pid, p.err, p.log.dump())
	}
}

// client is a player's connection.
type client struct {
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitBound)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{conn: c, r: bufio.NewReader(c)}
}

// write sends raw bytes.
func (c *client) write(s string) error {
	c.conn.SetWriteDeadline(time.Now().Add(waitBound))
	_, err := io.WriteString(c.conn, s)
	return err
}

// recv reads one reply line, without its "\n".
func (c *client) recv() (string, error) {
	c.conn.SetReadDeadline(time.Now().Add(waitBound))
	line, err := c.r.ReadString('\n')
	if err != nil {
		return line, err
	}
	return strings.TrimSuffix(line, "\n"), nil
}

// do sends one command and returns its reply, failing the test on error.
func (c *client) do(t *testing.T, cmd string) string {
	t.Helper()
	if err := c.write(cmd + "\n"); err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	reply, err := c.recv()
	if err != nil {
		t.Fatalf("%s: reply: %v", cmd, err)
	}
	return reply
}

// expect sends cmd and checks the reply.
func (c *client) expect(t *testing.T, cmd, want string) {
	t.Helper()
	if got := c.do(t, cmd); got != want {
		t.Fatalf("%s: got %q, want %q", cmd, got, want)
	}
}

// closed checks that the server closed the connection.
func (c *client) closed(t *testing.T) {
	t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(waitBound))
	if line, err := c.r.ReadString('\n'); err != io.EOF {
		t.Fatalf("read %q, %v; want the connection closed (EOF)", line, err)
	}
}
