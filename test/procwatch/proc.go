package procwatch

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Find's errors wrap one of these.
var (
	// ErrTimeout: the bound passed before a line matched.
	ErrTimeout = errors.New("timed out")
	// ErrEnded: the output ended, the process having exited, before a line
	// matched.
	ErrEnded = errors.New("output ended")
)

// drainAfterExit is how long Find reads on after the process has exited, for
// what is left in the pipe, when workers that share it keep it open.
const drainAfterExit = time.Second

// tailLines is how many lines of output Find's errors carry.
const tailLines = 8

// Proc is a process started by Start.
type Proc struct {
	Name string // for messages, such as "supervisor"
	PID  int
	Log  *Log // its stdout and stderr, together

	out  *os.File      // the read end of the output pipe
	done chan struct{} // closed once the process has been waited for
	err  error         // from Wait, valid after done
}

// started holds the processes that Start and Run started and that have not
// been waited for yet (nil for Run's). Every other child of ours is an orphan.
var started struct {
	sync.Mutex
	procs map[int]*Proc
}

// register starts cmd and registers it under one lock, so that ReapOrphans
// never sees it unregistered.
func register(cmd *exec.Cmd, p *Proc) error {
	started.Lock()
	defer started.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	if started.procs == nil {
		started.procs = make(map[int]*Proc)
	}
	started.procs[cmd.Process.Pid] = p
	return nil
}

func unregister(pid int) {
	started.Lock()
	defer started.Unlock()
	delete(started.procs, pid)
}

func isStarted(pid int) bool {
	started.Lock()
	defer started.Unlock()
	_, ok := started.procs[pid]
	return ok
}

// Start starts cmd with its stdout and stderr, which it sets, read into a
// Log. name is for messages.
func Start(name string, cmd *exec.Cmd) (*Proc, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("procwatch: start %s: %w", name, err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	p := &Proc{Name: name, Log: newLog(), out: r, done: make(chan struct{})}
	err = register(cmd, p)
	w.Close()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("procwatch: start %s: %w", name, err)
	}
	p.PID = cmd.Process.Pid
	go p.Log.read(r)
	go func() {
		p.err = cmd.Wait()
		unregister(p.PID)
		close(p.done)
	}()
	return p, nil
}

// Run runs cmd to its end, like cmd.Run, registered meanwhile so that
// ReapOrphans leaves it alone.
func Run(cmd *exec.Cmd) error {
	if err := register(cmd, nil); err != nil {
		return err
	}
	defer unregister(cmd.Process.Pid)
	return cmd.Wait()
}

// Done is closed once the process has exited and been waited for.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is what Wait returned, nil for exit status 0; valid once Done is
// closed.
func (p *Proc) Err() error { return p.err }

// Exited reports whether the process has exited and been waited for.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process, unless it has been waited for already:
// its PID may then name another process.
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return fmt.Errorf("%s (pid %d) has exited: %v", p.Name, p.PID, p.err)
	}
	return syscall.Kill(p.PID, sig)
}

// Stop sends SIGTERM and waits up to bound, then sends SIGKILL and waits up
// to bound again. The error says that SIGTERM was not enough.
func (p *Proc) Stop(bound time.Duration) error {
	if p.Exited() {
		return nil
	}
	syscall.Kill(p.PID, syscall.SIGTERM)
	if p.wait(bound) {
		return nil
	}
	syscall.Kill(p.PID, syscall.SIGKILL)
	if !p.wait(bound) {
		return fmt.Errorf("%s (pid %d) survived SIGKILL for %v", p.Name, p.PID, bound)
	}
	return fmt.Errorf("%s (pid %d) did not stop within %v of SIGTERM; killed it", p.Name, p.PID, bound)
}

func (p *Proc) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}

// CloseOutput stops reading the output: the Log ends now, even while
// a process that shares the pipe (an orphaned worker) still holds it open.
func (p *Proc) CloseOutput() { p.out.Close() }

// StopAll stops every process that Start started and that has not been
// waited for: the last resort on the way out.
func StopAll(bound time.Duration) error {
	started.Lock()
	var ps []*Proc
	for _, p := range started.procs {
		if p != nil {
			ps = append(ps, p)
		}
	}
	started.Unlock()
	var errs []error
	for _, p := range ps {
		errs = append(errs, p.Stop(bound))
	}
	return errors.Join(errs...)
}

// Find waits up to d for the first line, from index from of the Log on, that
// match accepts, and returns it with its index. what names the line in the
// error, which wraps ErrTimeout or ErrEnded and ends with the last lines of
// output.
func (p *Proc) Find(from int, d time.Duration, what string, match func(Entry) bool) (Entry, int, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	exited := p.done
	for {
		es, eof, changed := p.Log.since(from)
		for i, e := range es {
			if match(e) {
				return e, from + i, nil
			}
		}
		from += len(es)
		if eof {
			changed = nil // nothing more will come; wait for the exit status
			if exited == nil {
				return Entry{}, from, p.ended(what)
			}
		}
		select {
		case <-changed:
		case <-exited:
			exited = nil
			timer.Reset(drainAfterExit)
		case <-timer.C:
			if exited == nil {
				return Entry{}, from, p.ended(what)
			}
			return Entry{}, from, fmt.Errorf("%s (pid %d): no %s within %v: %w\n%s", p.Name, p.PID, what, d, ErrTimeout, p.Log.Tail(tailLines))
		}
	}
}

func (p *Proc) ended(what string) error {
	return fmt.Errorf("%s (pid %d) exited (%v) before %s: %w\n%s", p.Name, p.PID, p.err, what, ErrEnded, p.Log.Tail(tailLines))
}
