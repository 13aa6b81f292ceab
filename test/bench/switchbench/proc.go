package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// entry is one line a process (the supervisor, or a worker through it)
// wrote to stdout or stderr.
type entry struct {
	at     time.Time      // when we read it
	raw    string         // the line
	fields map[string]any // the JSON object, nil when the line is not JSON
}

func (e entry) msg() string { s, _ := e.fields["message"].(string); return s }
func (e entry) str(key string) string {
	s, _ := e.fields[key].(string)
	return s
}

func (e entry) num(key string) (float64, bool) {
	f, ok := e.fields[key].(float64)
	return f, ok
}

func (e entry) int(key string) int { f, _ := e.num(key); return int(f) }

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

// is matches the supervisor's JSON message msg.
func (e entry) is(msg string) bool { return e.fields != nil && e.msg() == msg }

// logBook collects a process's output lines as they come.
type logBook struct {
	mu      sync.Mutex
	entries []entry
	eof     bool
	changed chan struct{} // closed and replaced on every change
}

func newLogBook() *logBook { return &logBook{changed: make(chan struct{})} }

func (l *logBook) read(f *os.File) {
	defer f.Close()
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

// since returns the entries from index i on, whether the output has ended,
// and a channel closed at the next change.
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

// tail returns the last n lines, for error messages.
func (l *logBook) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	es := l.entries
	if len(es) > n {
		es = es[len(es)-n:]
	}
	var b strings.Builder
	for _, e := range es {
		b.WriteString("    | " + e.raw + "\n")
	}
	return b.String()
}

// proc is a process the benchmark started. Every proc is registered until it
// has been waited for, so that cleanup can stop whatever is left.
type proc struct {
	name string
	cmd  *exec.Cmd
	pid  int
	logs *logBook
	done chan struct{} // closed once the process has been waited for
	err  error         // from Wait, valid after done
}

var running struct {
	sync.Mutex
	procs map[int]*proc
}

// startProc starts path with args, its stdout and stderr collected in a
// logBook. It runs in a process group of its own, so that a ^C at the
// terminal reaches only the benchmark, which then stops it in order.
func startProc(name, path string, args ...string) (*proc, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, pid: cmd.Process.Pid, logs: newLogBook(), done: make(chan struct{})}
	running.Lock()
	if running.procs == nil {
		running.procs = make(map[int]*proc)
	}
	running.procs[p.pid] = p
	running.Unlock()
	go p.logs.read(r)
	go func() {
		p.err = cmd.Wait()
		running.Lock()
		delete(running.procs, p.pid)
		running.Unlock()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the process, unless it has been waited for already
// (its PID may then belong to another process).
func (p *proc) signal(sig syscall.Signal) error {
	if p.exited() {
		return fmt.Errorf("%s (pid %d) has exited: %v", p.name, p.pid, p.err)
	}
	return syscall.Kill(p.pid, sig)
}

// stop sends SIGTERM, waits up to bound, then SIGKILL and waits again. It
// reports an error when the process had to be killed.
func (p *proc) stop(bound time.Duration) error {
	if p.exited() {
		return nil
	}
	syscall.Kill(p.pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(bound):
	}
	syscall.Kill(p.pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(bound):
		return fmt.Errorf("%s (pid %d) survived SIGKILL for %v", p.name, p.pid, bound)
	}
	return fmt.Errorf("%s (pid %d) did not stop within %v of SIGTERM; killed it", p.name, p.pid, bound)
}

// errTimeout is wrapped by find's errors at the bound.
var errTimeout = errors.New("timed out")

// find waits up to d for the first entry from index from on that match
// accepts, and returns it with its index.
func (p *proc) find(from int, d time.Duration, what string, match func(entry) bool) (entry, int, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	exited := p.done
	for {
		es, eof, changed := p.logs.since(from)
		for i, e := range es {
			if match(e) {
				return e, from + i, nil
			}
		}
		from += len(es)
		if eof && exited == nil {
			break
		}
		select {
		case <-changed:
			continue
		case <-exited:
			exited = nil // read what is left in the pipe, then give up
			timer.Reset(time.Second)
			continue
		case <-timer.C:
		}
		if exited != nil {
			return entry{}, from, fmt.Errorf("%s (pid %d): no %s within %v: %w\n%s", p.name, p.pid, what, d, errTimeout, p.logs.tail(8))
		}
		break
	}
	return entry{}, from, fmt.Errorf("%s (pid %d) exited (%v) before %s\n%s", p.name, p.pid, p.err, what, p.logs.tail(8))
}

// stopAll stops every process still registered, the last resort on the way
// out.
func stopAll(bound time.Duration) {
	running.Lock()
	var ps []*proc
	for _, p := range running.procs {
		ps = append(ps, p)
	}
	running.Unlock()
	for _, p := range ps {
		if err := p.stop(bound); err != nil {
			warnf("%v", err)
		}
	}
}

// waitEOF waits up to d for the end of the process's output: once it and
// every process sharing its stdout and stderr have exited.
func (p *proc) waitEOF(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		_, eof, changed := p.logs.since(1 << 30)
		if eof {
			return true
		}
		select {
		case <-changed:
		case <-timer.C:
			return false
		}
	}
}
