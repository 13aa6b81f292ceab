package handoff

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/internal/contract"
	"golang.org/x/sys/unix"
)

// The test binary doubles as the worker: TestMain dispatches on helperEnv.
// Workers are started through the "shim" helper, which sets LISTEN_PID to its
// own PID and execs the named helper, as the supervisor's shim does.
const (
	helperEnv   = "HANDOFF_TEST_HELPER"
	shimNextEnv = "HANDOFF_TEST_SHIM_NEXT"
)

// Bounds on the waits of the process tests.
const (
	readyTimeout = 20 * time.Second // a race-instrumented worker starting on a busy machine
	exitTimeout  = 20 * time.Second
)

var helpers = map[string]func() error{
	"report":   helperReport,
	"drain":    helperDrain,
	"serve":    helperServe,
	"shutdown": helperShutdown,
}

func TestMain(m *testing.M) {
	name := os.Getenv(helperEnv)
	if name == "" {
		os.Exit(m.Run())
	}
	if name == "shim" {
		runShim()
	}
	fn, ok := helpers[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "handoff test: unknown helper %q\n", name)
		os.Exit(2)
	}
	if err := fn(); err != nil {
		fmt.Fprintf(os.Stderr, "handoff test: helper %s: %v\n", name, err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runShim() {
	env := []string{helperEnv + "=" + os.Getenv(shimNextEnv), contract.EnvListenPID + "=" + strconv.Itoa(os.Getpid())}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, helperEnv+"=") && !strings.HasPrefix(kv, shimNextEnv+"=") {
			env = append(env, kv)
		}
	}
	exe, err := os.Executable()
	if err == nil {
		err = syscall.Exec(exe, os.Args, env)
	}
	fmt.Fprintf(os.Stderr, "handoff test: shim: exec: %v\n", err)
	os.Exit(2)
}

// child is a helper process with its own notify socket.
type child struct {
	cmd    *exec.Cmd
	notify *net.UnixConn
	msgs   chan string // datagrams from the notify socket
	stdin  *os.File    // the write end of the child's stdin
	done   chan struct{}
	err    error // Wait's result, once done is closed
	marked bool  // exitedMarker sent
	stdout bytes.Buffer
	stderr bytes.Buffer
}

// startChild starts helper through the shim with files at fds 3, 4, ...
// named names, and extra environment variables.
func startChild(t *testing.T, helper string, files []*os.File, names []string, env ...string) *child {
	t.Helper()
	c := &child{msgs: make(chan string, 16), done: make(chan struct{})}
	addr := filepath.Join(shortTempDir(t), "notify")
	var err error
	c.notify, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	go c.readNotify()

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command(exe)
	c.cmd.Env = append(cleanEnv(),
		helperEnv+"=shim", shimNextEnv+"="+helper,
		contract.EnvNotifySocket+"="+addr,
		contract.EnvListenFDs+"="+strconv.Itoa(len(files)),
		contract.EnvListenFDNames+"="+strings.Join(names, ":"),
		// Under -race, each exit would otherwise sleep a second.
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	c.cmd.Env = append(c.cmd.Env, env...)
	c.cmd.ExtraFiles = files
	c.cmd.Stdout, c.cmd.Stderr = &c.stdout, &c.stderr
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c.cmd.Stdin, c.stdin = stdinR, stdinW
	err = c.cmd.Start()
	stdinR.Close()
	if err != nil {
		stdinW.Close()
		t.Fatal(err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		c.stdin.Close()
		select {
		case <-c.done:
		default:
			c.cmd.Process.Kill()
			select {
			case <-c.done:
			case <-time.After(exitTimeout):
				t.Errorf("helper %s (pid %d) not reaped after kill", helper, c.cmd.Process.Pid)
			}
		}
		c.notify.Close()
	})
	return c
}

func (c *child) readNotify() {
	defer close(c.msgs)
	buf := make([]byte, 4096)
	for {
		n, err := c.notify.Read(buf)
		if err != nil {
			return
		}
		c.msgs <- string(buf[:n])
	}
}

// exitedMarker is the datagram the test sends itself once the child has
// exited: datagrams queue in order, so every message the child sent before
// exiting is read before it.
const exitedMarker = "HANDOFF_TEST_EXITED=1"

// expect waits for a datagram equal to msg, failing on another message, on
// the child's exit or at the timeout.
func (c *child) expect(t *testing.T, msg string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	done := c.done
	for {
		select {
		case got, ok := <-c.msgs:
			switch {
			case !ok:
				t.Fatalf("notify socket closed while waiting for %q", msg)
			case got == msg:
				return
			case got == exitedMarker:
				c.msgs = nil // nothing more will come
				t.Fatalf("helper exited (%v) before sending %q; stderr:\n%s", c.err, msg, c.stderr.String())
			default:
				t.Fatalf("notify: got %q, want %q", got, msg)
			}
		case <-done:
			done = nil
			c.markExit(t)
		case <-deadline:
			t.Fatalf("no %q from helper within %v", msg, timeout)
		}
	}
}

// markExit sends exitedMarker to the child's notify socket, once.
func (c *child) markExit(t *testing.T) {
	t.Helper()
	if c.marked {
		return
	}
	c.marked = true
	conn, err := net.DialUnix("unixgram", nil, c.notify.LocalAddr().(*net.UnixAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(exitedMarker)); err != nil {
		t.Fatal(err)
	}
}

// wait waits for the child to exit by itself and returns Wait's error.
func (c *child) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-c.done:
		return c.err
	case <-time.After(timeout):
		t.Fatalf("helper (pid %d) did not exit within %v", c.cmd.Process.Pid, timeout)
		return nil
	}
}

func (c *child) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to helper: %v", sig, err)
	}
}

// cleanEnv is the test's environment without the contract's variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case contract.EnvListenFDs, contract.EnvListenFDNames, contract.EnvListenPID, contract.EnvNotifySocket,
			contract.EnvWatchdogUSec, contract.EnvWatchdogPID, contract.EnvDrainSignal, contract.EnvGeneration, helperEnv, shimNextEnv, "GORACE":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// shortTempDir is a temporary directory with a path short enough for a Unix
// socket name (108 bytes), which t.TempDir's may not be.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ho")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// socketFile returns a new *os.File holding a dup of c's socket, made with
// SyscallConn and dup (File would switch the shared socket to blocking mode).
func socketFile(t *testing.T, c syscall.Conn) *os.File {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	var dupErr error
	err = rc.Control(func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
	if err != nil {
		t.Fatal(err)
	}
	if dupErr != nil {
		t.Fatal(dupErr)
	}
	f := os.NewFile(uintptr(fd), "socket")
	t.Cleanup(func() { f.Close() })
	return f
}
