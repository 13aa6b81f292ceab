package game

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/test/procwatch"
)

// line is one line a process (the supervisor, or a worker through it)
// wrote to stderr.
type line = procwatch.Entry

// proc is a process under test: the supervisor, or the game on its own.
type proc struct {
	*procwatch.Proc
	t   *testing.T
	cmd *exec.Cmd
	pid int
}

// startProc starts bin with args and env added to ours, its stdout and
// stderr read into its log; the test's cleanup stops it.
func startProc(t *testing.T, name, bin string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	if os.Getenv("GORACE") == "" {
		// A -race build sleeps a second at exit unless told not to.
		cmd.Env = append(cmd.Env, "GORACE=atexit_sleep_ms=0")
	}
	pp, err := procwatch.Start(name, cmd)
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{Proc: pp, t: t, cmd: cmd, pid: pp.PID}
	t.Cleanup(p.cleanup)
	return p
}

// cleanup stops the process if it still runs, reaps what it left behind,
// and fails the test on a panic or a data race in its output.
func (p *proc) cleanup() {
	t := p.t
	if !p.Exited() {
		if err := p.Stop(stopBound); err != nil {
			t.Errorf("%v", err)
		}
	}
	if orphans, _ := procwatch.ReapOrphans("", stopBound); len(orphans) > 0 {
		t.Errorf("processes %v outlived %s %d; killed them", orphans, p.Name, p.pid)
	}
	p.Log.WaitEOF(stopBound)
	for _, l := range p.Log.All() {
		if strings.Contains(l.Raw, "DATA RACE") || strings.HasPrefix(l.Raw, "panic:") || strings.HasPrefix(l.Raw, "fatal error:") {
			t.Errorf("%s output: %s", p.Name, l.Raw)
		}
	}
	if t.Failed() {
		p.dump(60)
	}
}

func (p *proc) dump(n int) {
	p.t.Logf("last %d lines of %s %d:\n%s", min(n, p.Log.Len()), p.Name, p.pid, p.Log.Tail(n))
}

// find waits up to d for the first line from index *at on that match
// accepts; it moves *at past it. ok is false at the bound, or when the
// output has ended.
func (p *proc) find(at *int, d time.Duration, match func(line) bool) (line, bool) {
	l, i, err := p.Find(*at, d, "", match)
	if err != nil {
		*at = i
		return line{}, false
	}
	*at = i + 1
	return l, true
}

// waitFor is find within waitBound that fails the test when nothing
// matches.
func (p *proc) waitFor(at *int, what string, match func(line) bool) line {
	p.t.Helper()
	l, ok := p.find(at, waitBound, match)
	if !ok {
		state := "running"
		if p.Exited() {
			state = fmt.Sprintf("exited: %v", p.Err())
		}
		p.t.Fatalf("%s %d (%s): no %s within %v", p.Name, p.pid, state, what, waitBound)
	}
	return l
}

// waitMsg waits for the supervisor's JSON message msg for which cond, if
// given, holds.
func (p *proc) waitMsg(at *int, msg string, cond func(line) bool) line {
	p.t.Helper()
	return p.waitFor(at, fmt.Sprintf("%q", msg), func(l line) bool {
		return l.Msg() == msg && (cond == nil || cond(l))
	})
}

// waitRe waits for a line that re matches and returns its submatches.
func (p *proc) waitRe(at *int, re *regexp.Regexp) []string {
	p.t.Helper()
	var m []string
	p.waitFor(at, fmt.Sprintf("a line matching %s", re), func(l line) bool {
		m = re.FindStringSubmatch(l.Raw)
		return m != nil
	})
	return m
}

// signal sends sig to the process.
func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.Signal(sig); err != nil {
		p.t.Fatalf("%s %d: %v: %v", p.Name, p.pid, sig, err)
	}
}

// wait waits up to waitBound for the process to exit, and returns its exit
// code (-1 when killed by a signal).
func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.Done():
	case <-time.After(waitBound):
		p.t.Fatalf("%s %d still running %v after it was told to stop", p.Name, p.pid, waitBound)
	}
	return p.cmd.ProcessState.ExitCode()
}

func reapAll() {
	if pids, _ := procwatch.ReapOrphans("", 5*time.Second); len(pids) > 0 {
		fmt.Fprintf(os.Stderr, "reaped leftover processes %v\n", pids)
	}
}
