package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the pathfind binary: with helperEnv set,
// TestMain runs main's run with the given arguments instead of the tests.
const (
	helperEnv        = "PATHFIND_TEST_HELPER" // "main": run; "shim": also set LISTEN_PID, as the supervisor's exec shim does
	helperVersionEnv = "PATHFIND_TEST_VERSION"
)

// waitBound bounds every wait for the helper process.
const waitBound = 20 * time.Second

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "shim":
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
	version = os.Getenv(helperVersionEnv)
	os.Exit(run(os.Args[1:], os.Stderr))
}

// proc is a running pathfind process.
type proc struct {
	cmd    *exec.Cmd
	addr   string        // from the start line
	client *http.Client  // keeps its connections alive, as a scene server would
	lines  chan string   // the rest of stderr, line by line
	exited chan struct{} // closed when it has exited
	err    error         // cmd.Wait's error, once exited is closed
}

var startLine = regexp.MustCompile(` on (\S+) \(`)

// startBinary runs path (the test binary by default) with args and waits
// for its start line, which names the address it serves.
func startBinary(t *testing.T, path string, env []string, args ...string) *proc {
	t.Helper()
	return startCmd(t, path, env, nil, args...)
}

// startCmd is startBinary with files passed as fds 3, 4, ...
func startCmd(t *testing.T, path string, env []string, files []*os.File, args ...string) *proc {
	t.Helper()
	if path == "" {
		path = os.Args[0]
		env = append(env, helperEnv+"=main")
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(cleanEnv(), env...)
	cmd.ExtraFiles = files
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{
		cmd:    cmd,
		client: &http.Client{Timeout: waitBound},
		lines:  make(chan string, 100),
		exited: make(chan struct{}),
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.client.CloseIdleConnections()
		cmd.Process.Kill()
		for range p.lines {
		}
		<-p.exited
	})
	line := p.next(t)
	m := startLine.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("start line %q names no address", line)
	}
	p.addr = m[1]
	return p
}

// cleanEnv is this process's environment without the worker contract's
// variables, in case the tests themselves run under a supervisor.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "LISTEN_"), strings.HasPrefix(k, "WATCHDOG_"),
			strings.HasPrefix(k, "SUPERVISOR_"), k == "NOTIFY_SOCKET":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// next returns the next line the process writes to stderr.
func (p *proc) next(t *testing.T) string {
	t.Helper()
	select {
	case line, ok := <-p.lines:
		if !ok {
			t.Fatal("pathfind closed stderr")
		}
		t.Logf("stderr: %s", line)
		return line
	case <-time.After(waitBound):
		t.Fatalf("no line from pathfind in %v", waitBound)
	}
	return ""
}

// stop closes the client's idle connections, which would otherwise hold
// the drain for its grace period, and sends sig; the process must drain
// and exit 0.
func (p *proc) stop(t *testing.T, sig os.Signal) {
	t.Helper()
	p.client.CloseIdleConnections()
	p.signal(t, sig)
	p.wait(t)
}

func (p *proc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// wait waits for the process to log that it drained and exit 0.
func (p *proc) wait(t *testing.T) {
	t.Helper()
	deadline := time.After(waitBound)
	drained := false
	for done := false; !done; {
		select {
		case line, ok := <-p.lines:
			if ok {
				t.Logf("stderr: %s", line)
			}
			drained = drained || strings.Contains(line, "drained")
			done = !ok
		case <-deadline:
			t.Fatalf("pathfind still running after %v", waitBound)
		}
	}
	<-p.exited // closed right after stderr
	if !drained {
		t.Errorf("pathfind did not log that it drained")
	}
	if p.err != nil {
		t.Fatalf("pathfind exited: %v, want status 0", p.err)
	}
}

// get fetches path from the process and decodes its JSON body into v.
func (p *proc) get(t *testing.T, path string, v any) *http.Response {
	t.Helper()
	res, err := p.client.Get("http://" + p.addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return res
}

// TestBinary runs pathfind on its own on an OS-chosen loopback port,
// queries it and stops it with each of the signals it drains on.
func TestBinary(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			p := startBinary(t, "", []string{helperVersionEnv + "=v-helper"}, "--listen", "127.0.0.1:0")
			checkServes(t, p, "v-helper")
			p.stop(t, sig)
		})
	}
}

// checkServes checks /healthz and one /path answer of a running process.
func checkServes(t *testing.T, p *proc, version string) {
	t.Helper()
	pid := strconv.Itoa(p.cmd.Process.Pid)
	var health struct {
		Status, Version string
		Pid             int
	}
	res := p.get(t, "/healthz", &health)
	checkHeaders(t, res, pid, version)
	if health.Status != "ok" || health.Version != version || health.Pid != p.cmd.Process.Pid {
		t.Errorf("healthz: %+v, want ok, %s, %d", health, version, p.cmd.Process.Pid)
	}
	g := defaultMap(t)
	a, b := farPair(t, g)
	_, want, _ := NewSolver(g).Path(a, b)
	var ans pathAnswer
	res = p.get(t, fmt.Sprintf("/path?from=%d,%d&to=%d,%d", a.X, a.Y, b.X, b.Y), &ans)
	checkHeaders(t, res, pid, version)
	if res.StatusCode != 200 || ans.Cost == nil || *ans.Cost != want {
		t.Errorf("path: status %d, cost %v, want 200 and %d", res.StatusCode, ans.Cost, want)
	}
}

// TestBinaryBadInput checks that bad flags and bad maps end the program
// with status 2 and one line on stderr.
func TestBinaryBadInput(t *testing.T) {
	dir := t.TempDir()
	badMap := filepath.Join(dir, "bad.map")
	if err := os.WriteFile(badMap, []byte("...\n.x.\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--nope"}, "flag provided but not defined: -nope"},
		{"argument", []string{"extra"}, `unexpected argument "extra"`},
		{"bad listen", []string{"--listen", "8080"}, `--listen "8080": want HOST:PORT`},
		{"bad map", []string{"--map", badMap}, badMap + ": line 2, column 2: unexpected 'x'"},
		{"missing map", []string{"--map", filepath.Join(dir, "none.map")}, "no such file or directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], tc.args...)
			cmd.Env = append(cleanEnv(), helperEnv+"=main")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != exitUsage {
				t.Fatalf("got %v, want exit status %d", err, exitUsage)
			}
			out := stderr.String()
			if strings.Count(out, "\n") != 1 || !strings.Contains(out, tc.want) {
				t.Fatalf("stderr %q, want one line containing %q", out, tc.want)
			}
		})
	}
}

// TestBinaryVersion builds the real binary with the version set by the
// linker, as a release would, and checks that it reports it.
func TestBinaryVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "pathfind")
	build := exec.Command("go", "build", "-o", bin, "-ldflags", "-X main.version=v1.2.3-test", ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	p := startBinary(t, bin, nil, "--listen", "127.0.0.1:0")
	checkServes(t, p, "v1.2.3-test")
	p.stop(t, syscall.SIGTERM)
}

func TestFlags(t *testing.T) {
	cfg, err := parseFlags(nil)
	if err != nil || cfg != (config{listen: "127.0.0.1:8080", socketName: "http"}) {
		t.Errorf("defaults: %+v, %v", cfg, err)
	}
	cfg, err = parseFlags([]string{"--listen", ":9", "--socket-name", "api", "--map", "m.txt"})
	if err != nil || cfg != (config{listen: ":9", socketName: "api", mapFile: "m.txt"}) {
		t.Errorf("all set: %+v, %v", cfg, err)
	}
	var out strings.Builder
	if code := run([]string{"--help"}, &out); code != exitOK || !strings.Contains(out.String(), "usage: pathfind") {
		t.Errorf("--help: status %d, output %q", code, out.String())
	}
}

// TestWatchdog checks that a ping follows only a passing self-check, and
// that the loop ends when told to.
func TestWatchdog(t *testing.T) {
	checks := 0
	check := func() error {
		if checks++; checks < 3 {
			return errors.New("not yet")
		}
		return nil
	}
	pinged := make(chan int, 1)
	ping := func() error {
		select {
		case pinged <- checks:
		default:
		}
		return nil
	}
	done, ended := make(chan struct{}), make(chan struct{})
	go func() {
		watchdog(time.Millisecond, done, check, ping, log.New(io.Discard, "", 0))
		close(ended)
	}()
	select {
	case n := <-pinged:
		if n < 3 {
			t.Errorf("pinged after %d checks, want the first ping after the 3rd (the first passing)", n)
		}
	case <-time.After(waitBound):
		t.Fatal("no ping")
	}
	close(done)
	select {
	case <-ended:
	case <-time.After(waitBound):
		t.Fatal("watchdog loop still running after done was closed")
	}
}
