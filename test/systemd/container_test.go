package systemd_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/procswitch/supervisor/test/procwatch"
)

// container is systemd booted by systemd-container.sh, driven through the
// script's exec (nsenter into every namespace of the container's PID 1).
type container struct {
	script string // systemd-container.sh
	dir    string // SYSD_DIR: the root filesystem and the script's files
	bin    string // host directory bound read-only at prefix
}

func (c *container) rootfs() string { return filepath.Join(c.dir, "root") }

func (c *container) env() []string {
	return append(os.Environ(),
		"SYSD_DIR="+c.dir,
		"SYSD_MACHINE="+machine,
		fmt.Sprintf("SYSD_BOOT_TIMEOUT=%d", int(bootWait.Seconds())),
		"SYSD_NSPAWN_ARGS=--bind-ro="+c.bin+":"+prefix,
	)
}

// script runs systemd-container.sh with args, bounded by d.
func (c *container) scriptRun(d time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.script, args...)
	cmd.Env = c.env()
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (bound %v)", ctx.Err(), d)
	}
	if err != nil {
		return string(out), fmt.Errorf("systemd-container.sh %s: %w\n%s", strings.Join(args, " "), err, tail(string(out), 30))
	}
	return string(out), nil
}

// ensureRootfs builds the root filesystem when it is missing: debootstrap,
// after installing systemd-container and debootstrap on the host if needed.
func (c *container) ensureRootfs() error {
	_, err := c.scriptRun(15*time.Minute, "build")
	return err
}

func (c *container) up() error {
	_, err := c.scriptRun(bootWait+30*time.Second, "up")
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(c.dir, "nspawn.log"))
		return fmt.Errorf("%w\ntail of %s/nspawn.log:\n%s", err, c.dir, tail(string(log), 30))
	}
	return nil
}

func (c *container) down() error {
	_, err := c.scriptRun(2*time.Minute, "down")
	return err
}

// result is what a command inside the container did.
type result struct {
	args   []string
	stdout string
	stderr string
	code   int   // exit status; -1 when it did not exit
	err    error // set when it could not run or did not exit in time
}

func (r result) String() string {
	return fmt.Sprintf("`%s`: exit %d%s\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code,
		errSuffix(r.err), tail(r.stdout, 40), tail(r.stderr, 40))
}

func errSuffix(err error) string {
	if err == nil {
		return ""
	}
	return " (" + err.Error() + ")"
}

// exec runs a command inside the container, bounded by d.
func (c *container) exec(d time.Duration, args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.script, append([]string{"exec"}, args...)...)
	cmd.Env = c.env()
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{args: args, stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
	var exitErr *exec.ExitError
	if ctx.Err() != nil {
		r.err = fmt.Errorf("no exit within %v", d)
	} else if err != nil && !errors.As(err, &exitErr) {
		r.err = err
	}
	return r
}

// must runs a command that has to succeed and returns its stdout.
func (c *container) must(t *testing.T, d time.Duration, args ...string) string {
	t.Helper()
	r := c.exec(d, args...)
	if r.err != nil || r.code != 0 {
		t.Fatalf("%v", r)
	}
	return r.stdout
}

// systemctl runs systemctl inside the container; its own bound is short
// because systemctl waits for its job: start, reload and stop are bounded by
// the unit's timeouts, and d must be above them.
func (c *container) systemctl(d time.Duration, args ...string) result {
	return c.exec(d, append([]string{"systemctl"}, args...)...)
}

// show reads one property of a unit.
func (c *container) show(t *testing.T, unit, prop string) string {
	t.Helper()
	return strings.TrimSpace(c.must(t, 30*time.Second, "systemctl", "show", "-p", prop, "--value", unit))
}

// waitFor polls cond every 20 ms until it holds or d passes: for states that
// systemd announces to no one (a property's new value).
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *container) journalOf(t *testing.T, invocation string) []procwatch.Entry {
	t.Helper()
	// The unit's processes' lines, and systemd's own about the unit.
	out := c.must(t, 30*time.Second, "journalctl", "--no-pager", "-o", "cat",
		"_SYSTEMD_INVOCATION_ID="+invocation, "+", "INVOCATION_ID="+invocation)
	var entries []procwatch.Entry
	for _, line := range strings.Split(out, "\n") {
		if line == "" {
			continue
		}
		e := procwatch.Entry{At: time.Now(), Raw: line}
		if strings.HasPrefix(line, "{") {
			var f map[string]any
			if json.Unmarshal([]byte(line), &f) == nil {
				e.Fields = f
			}
		}
		entries = append(entries, e)
	}
	return entries
}

// awaitJournal polls the journal of the unit's current invocation until
// match has found n entries, or d passes; journald writes asynchronously.
func (c *container) awaitJournal(t *testing.T, unit string, n int, d time.Duration, match func(procwatch.Entry) bool) []procwatch.Entry {
	t.Helper()
	inv := c.show(t, unit, "InvocationID")
	var found []procwatch.Entry
	waitFor(d, func() bool {
		found = found[:0]
		for _, e := range c.journalOf(t, inv) {
			if match(e) {
				found = append(found, e)
			}
		}
		return len(found) >= n
	})
	return found
}

// bg is a command running inside the container in the background (a load
// client): its stdout lines come on lines; closing its stdin ends it.
type bg struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	done  chan struct{}
	mu    sync.Mutex
	err   bytes.Buffer // its stderr
}

// start runs a command inside the container in the background. The test's
// cleanup ends it if the test did not.
func (c *container) start(t *testing.T, name string, args ...string) *bg {
	t.Helper()
	cmd := exec.Command(c.script, append([]string{"exec"}, args...)...)
	cmd.Env = c.env()
	b := &bg{name: name, cmd: cmd, lines: make(chan string, 1024), done: make(chan struct{})}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, pw := io.Pipe()
	cmd.Stdout = pw
	cmd.Stderr = lockedWriter{&b.mu, &b.err}
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	b.stdin = stdin
	go func() {
		defer close(b.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			b.lines <- sc.Text()
		}
	}()
	go func() {
		cmd.Wait()
		pw.Close()
		close(b.done)
	}()
	t.Cleanup(func() { b.end(30 * time.Second) })
	return b
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (b *bg) stderr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err.String()
}

// send writes a command line to its stdin.
func (b *bg) send(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(b.stdin, line+"\n"); err != nil {
		t.Fatalf("%s: %v; stderr:\n%s", b.name, err, b.stderr())
	}
}

// event waits for the next JSON line whose "event" is want, and decodes it
// into v (when not nil).
func (b *bg) event(t *testing.T, want string, d time.Duration, v any) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case line, ok := <-b.lines:
			if !ok {
				t.Fatalf("%s ended before %q; stderr:\n%s", b.name, want, tail(b.stderr(), 20))
			}
			var ev struct {
				Event string `json:"event"`
			}
			if json.Unmarshal([]byte(line), &ev) != nil || ev.Event != want {
				continue
			}
			if v != nil {
				if err := json.Unmarshal([]byte(line), v); err != nil {
					t.Fatalf("%s: %v in %s", b.name, err, line)
				}
			}
			return
		case <-timer.C:
			t.Fatalf("%s: no %q within %v; stderr:\n%s", b.name, want, d, tail(b.stderr(), 20))
		}
	}
}

// finish closes its stdin, which ends it, and decodes its "result" line.
func (b *bg) finish(t *testing.T, v any) {
	t.Helper()
	b.stdin.Close()
	b.event(t, "result", time.Minute, v)
	select {
	case <-b.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s printed its result but did not exit", b.name)
	}
}

// end closes its stdin and waits for it, killing the local side after d.
func (b *bg) end(d time.Duration) {
	b.stdin.Close()
	select {
	case <-b.done:
	case <-time.After(d):
		b.cmd.Process.Kill()
		<-b.done
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
