package proc

import (
	"fmt"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Command describes a process to start.
type Command struct {
	Path  string   // executable
	Args  []string // argv, including argv[0]
	Env   []string
	Dir   string
	Files []int // fds to pass: entry i becomes the child's fd 3+i; stdio is inherited
}

// Process is a started child. Its status is known once Done is closed.
type Process struct {
	Pid     int
	Started time.Time

	r      *Reaper
	done   chan struct{}
	status unix.WaitStatus
}

// Start starts c in its own process group. The child is killed if the
// supervisor dies (PR_SET_PDEATHSIG), so no worker lives on unsupervised, and
// it receives exactly stdio plus c.Files: every other fd of ours is
// close-on-exec.
func (r *Reaper) Start(c *Command) (*Process, error) {
	files := make([]uintptr, 0, 3+len(c.Files))
	files = append(files, 0, 1, 2)
	for _, fd := range c.Files {
		files = append(files, uintptr(fd))
	}
	attr := &syscall.ProcAttr{
		Dir:   c.Dir,
		Env:   c.Env,
		Files: files,
		Sys:   &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var pid int
	var err error
	onMain(func() { pid, err = syscall.ForkExec(c.Path, c.Args, attr) }) // mainthread.go
	if err != nil {
		return nil, fmt.Errorf("proc: start %s: %w", c.Path, err)
	}
	p := &Process{Pid: pid, Started: time.Now(), r: r, done: make(chan struct{})}
	r.children[pid] = p
	return p, nil
}

// PID is the process's id.
func (p *Process) PID() int { return p.Pid }

// StartTime is when it was started.
func (p *Process) StartTime() time.Time { return p.Started }

// Done is closed when the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Status is the process's wait status. It waits for Done: receiving from
// the closed channel is also what makes the reaper's write visible.
func (p *Process) Status() unix.WaitStatus {
	<-p.done
	return p.status
}

// Signal sends sig to the process. It returns ErrProcessDone once the process
// has been reaped; its pid can then belong to somebody else, so it is never
// signalled again.
func (p *Process) Signal(sig syscall.Signal) error {
	return p.signal(p.Pid, sig)
}

// Kill kills the process and every process in its group. It is idempotent:
// killing a process already gone is not an error.
func (p *Process) Kill() error {
	err := p.signal(-p.Pid, syscall.SIGKILL)
	if err == ErrProcessDone {
		return nil
	}
	return err
}

// KillGroup kills whatever is left in the process's group once the process
// itself has exited and been reaped: children it started and left behind.
// The group's id stays reserved while any member lives, so this reaches
// only them.
func (p *Process) KillGroup() {
	unix.Kill(-p.Pid, syscall.SIGKILL)
}

func (p *Process) signal(target int, sig syscall.Signal) error {
	p.r.mu.Lock() // the pid cannot be reaped, and so reused, while we hold this
	defer p.r.mu.Unlock()
	select {
	case <-p.done:
		return ErrProcessDone
	default:
	}
	err := unix.Kill(target, sig)
	if err == unix.ESRCH && target < 0 {
		// The leader is a zombie not yet reaped and its group is empty.
		return nil
	}
	if err != nil {
		return fmt.Errorf("proc: signal %d %v: %w", p.Pid, sig, err)
	}
	return nil
}

// Describe says how a wait status ended a process, in words for a log.
func Describe(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit status %d", ws.ExitStatus())
	case ws.Signaled():
		return "killed by " + unix.SignalName(ws.Signal())
	}
	return fmt.Sprintf("wait status %#x", uint32(ws))
}

// ExitCodeFromShim is the status the exec shim exits with when it cannot
// execute the worker, as a shell does for a command it cannot run.
const ExitCodeFromShim = 127
