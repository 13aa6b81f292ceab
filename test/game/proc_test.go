package game

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// line is one line a process (the supervisor, or a worker through it)
// wrote to stderr.
type line struct {
	raw    string
	fields map[string]any // the JSON object; nil when the line is not JSON
}

func (l line) msg() string {
	s, _ := l.fields["message"].(string)
	return s
}

func (l line) str(key string) string {
	s, _ := l.fields[key].(string)
	return s
}

func (l line) num(key string) (float64, bool) {
	f, ok := l.fields[key].(float64)
	return f, ok
}

func (l line) int(key string) int {
	f, _ := l.num(key)
	return int(f)
}

func (l line) ints(key string) []int {
	a, _ := l.fields[key].([]any)
	var out []int
	for _, v := range a {
		if f, ok := v.(float64); ok {
			out = append(out, int(f))
		}
	}
	return out
}

// logBook collects a process's output as it comes.
type logBook struct {
	mu      sync.Mutex
	lines   []line
	eof     bool
	changed chan struct{} // closed and replaced on every change
}

func (b *logBook) read(f *os.File) {
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := line{raw: sc.Text()}
		if strings.HasPrefix(l.raw, "{") {
			var m map[string]any
			if json.Unmarshal([]byte(l.raw), &m) == nil {
				l.fields = m
			}
		}
		b.mu.Lock()
		b.lines = append(b.lines, l)
		close(b.changed)
		b.changed = make(chan struct{})
		b.mu.Unlock()
	}
	b.mu.Lock()
	b.eof = true
	close(b.changed)
	b.mu.Unlock()
}

// since returns the lines from index i on, whether the output has ended,
// and a channel closed at the next change.
func (b *logBook) since(i int) ([]line, bool, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	i = min(i, len(b.lines))
	return append([]line(nil), b.lines[i:]...), b.eof, b.changed
}

func (b *logBook) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.lines)
}

// proc is a process under test: the supervisor, or the game on its own.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	pid  int
	log  *logBook
	done chan struct{} // closed once it has exited and been waited for
	err  error         // from Wait, valid after done
}

// startProc starts bin with args and env added to ours, its stdout and
// stderr read into its log; the test's cleanup stops it.
func startProc(t *testing.T, name, bin string, env []string, args ...string) *proc {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, name: name, log: &logBook{changed: make(chan struct{})}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	if os.Getenv("GORACE") == "" {
		// A -race build sleeps a second at exit unless told not to.
		p.cmd.Env = append(p.cmd.Env, "GORACE=atexit_sleep_ms=0")
	}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	err = p.cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	p.pid = p.cmd.Process.Pid
	addStarted(p.pid)
	go func() {
		p.log.read(r)
		r.Close()
	}()
	go func() {
		p.err = p.cmd.Wait()
		removeStarted(p.pid)
		close(p.done)
	}()
	t.Cleanup(p.cleanup)
	return p
}

// cleanup stops the process if it still runs, reaps what it left behind,
// and fails the test on a panic or a data race in its output.
func (p *proc) cleanup() {
	t := p.t
	if p.running() {
		syscall.Kill(p.pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(stopBound):
			t.Errorf("%s %d did not stop within %v of SIGTERM; killing it", p.name, p.pid, stopBound)
			syscall.Kill(p.pid, syscall.SIGKILL)
			<-p.done
		}
	}
	if orphans := reapOrphans(stopBound); len(orphans) > 0 {
		t.Errorf("processes %v outlived %s %d; killed them", orphans, p.name, p.pid)
	}
	p.waitEOF(stopBound)
	lines, _, _ := p.log.since(0)
	for _, l := range lines {
		if strings.Contains(l.raw, "DATA RACE") || strings.HasPrefix(l.raw, "panic:") || strings.HasPrefix(l.raw, "fatal error:") {
			t.Errorf("%s output: %s", p.name, l.raw)
		}
	}
	if t.Failed() {
		p.dump(60)
	}
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proc) waitEOF(d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		_, eof, changed := p.log.since(1 << 30)
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

func (p *proc) dump(n int) {
	lines, _, _ := p.log.since(0)
	lines = lines[max(0, len(lines)-n):]
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l.raw)
		b.WriteByte('\n')
	}
	p.t.Logf("last %d lines of %s %d:\n%s", len(lines), p.name, p.pid, b.String())
}

// find waits up to d for the first line from index *at on that match
// accepts; it moves *at past it. ok is false at the bound, or when the
// output has ended.
func (p *proc) find(at *int, d time.Duration, match func(line) bool) (line, bool) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		lines, eof, changed := p.log.since(*at)
		for i, l := range lines {
			if match(l) {
				*at += i + 1
				return l, true
			}
		}
		*at += len(lines)
		if eof {
			return line{}, false
		}
		select {
		case <-changed:
		case <-timer.C:
			return line{}, false
		}
	}
}

// waitFor is find within waitBound that fails the test when nothing
// matches.
func (p *proc) waitFor(at *int, what string, match func(line) bool) line {
	p.t.Helper()
	l, ok := p.find(at, waitBound, match)
	if !ok {
		state := "running"
		if !p.running() {
			state = fmt.Sprintf("exited: %v", p.err)
		}
		p.t.Fatalf("%s %d (%s): no %s within %v", p.name, p.pid, state, what, waitBound)
	}
	return l
}

// waitMsg waits for the supervisor's JSON message msg for which cond, if
// given, holds.
func (p *proc) waitMsg(at *int, msg string, cond func(line) bool) line {
	p.t.Helper()
	return p.waitFor(at, fmt.Sprintf("%q", msg), func(l line) bool {
		return l.msg() == msg && (cond == nil || cond(l))
	})
}

// waitRe waits for a line that re matches and returns its submatches.
func (p *proc) waitRe(at *int, re *regexp.Regexp) []string {
	p.t.Helper()
	var m []string
	p.waitFor(at, fmt.Sprintf("a line matching %s", re), func(l line) bool {
		m = re.FindStringSubmatch(l.raw)
		return m != nil
	})
	return m
}

// signal sends sig to the process.
func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := syscall.Kill(p.pid, sig); err != nil {
		p.t.Fatalf("%s %d: %v: %v", p.name, p.pid, sig, err)
	}
}

// wait waits up to waitBound for the process to exit, and returns its exit
// code (-1 when killed by a signal).
func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(waitBound):
		p.t.Fatalf("%s %d still running %v after it was told to stop", p.name, p.pid, waitBound)
	}
	return p.cmd.ProcessState.ExitCode()
}

// started holds the PIDs this test binary started with os/exec and has not
// waited for yet; any other child is an orphan re-parented to us.
var started struct {
	sync.Mutex
	pids map[int]bool
}

func addStarted(pid int) {
	started.Lock()
	defer started.Unlock()
	if started.pids == nil {
		started.pids = make(map[int]bool)
	}
	started.pids[pid] = true
}

func removeStarted(pid int) {
	started.Lock()
	defer started.Unlock()
	delete(started.pids, pid)
}

// childrenOf lists the PIDs whose parent is ppid, zombies included.
func childrenOf(ppid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) >= 2 && f[1] == strconv.Itoa(ppid) {
			out = append(out, pid)
		}
	}
	return out
}

// reapOrphans kills and reaps the children os/exec did not start: workers
// of a supervisor that died. It returns their PIDs.
func reapOrphans(bound time.Duration) []int {
	var orphans []int
	deadline := time.Now().Add(bound)
	for _, pid := range childrenOf(os.Getpid()) {
		started.Lock()
		mine := started.pids[pid]
		started.Unlock()
		if mine {
			continue
		}
		orphans = append(orphans, pid)
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue
		}
		unix.Kill(pid, unix.SIGKILL)
		waitPidfd(fd, time.Until(deadline))
		var info unix.Siginfo
		unix.Waitid(unix.P_PIDFD, fd, &info, unix.WEXITED|unix.WNOHANG, nil)
		unix.Close(fd)
	}
	return orphans
}

// waitPidfd waits up to d for the process of pidfd fd to exit.
func waitPidfd(fd int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		ms := max(0, int(time.Until(deadline)/time.Millisecond))
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, ms)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err == nil && n > 0
	}
}

func reapAll() {
	if pids := reapOrphans(5 * time.Second); len(pids) > 0 {
		fmt.Fprintf(os.Stderr, "reaped leftover processes %v\n", pids)
	}
}
