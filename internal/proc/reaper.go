// Package proc starts the supervisor's worker processes and reaps every
// process that ends below the supervisor.
//
// The supervisor is a child subreaper (PR_SET_CHILD_SUBREAPER): a worker's own
// children that outlive it are re-parented to the supervisor, not to PID 1,
// which on some hosts never reaps them. One Reaper owns all waiting: it reaps
// whatever exits on SIGCHLD, hands a worker's status to its Process, and
// reports orphans. Nothing else in the process may call wait.
package proc

import (
	"errors"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrProcessDone is returned when signalling a process that has been reaped.
var ErrProcessDone = os.ErrProcessDone

// Reaper starts processes and reaps them and any orphans re-parented to us.
type Reaper struct {
	mu       sync.Mutex // held across fork and across wait, so no pid is reaped before it is known
	children map[int]*Process
	onOrphan func(pid int, status unix.WaitStatus)
	holds    int // HoldOrphans calls not yet released
	adopted  map[int]*Process
	sigs     chan os.Signal
	stop     chan struct{}
	done     chan struct{}
}

// NewReaper makes this process a child subreaper and starts reaping.
// onOrphan, if not nil, is told about every reaped process that this Reaper
// did not start (an orphaned grandchild). adopt are children this process
// had before it re-executed itself (Exec): they are its own from the
// start, as if it had started them (Adopted).
func NewReaper(onOrphan func(pid int, status unix.WaitStatus), adopt ...Adoptee) (*Reaper, error) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, &os.SyscallError{Syscall: "prctl(PR_SET_CHILD_SUBREAPER)", Err: err}
	}
	closeInheritedFDs()
	r := &Reaper{
		children: map[int]*Process{},
		onOrphan: onOrphan,
		sigs:     make(chan os.Signal, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	r.adopt(adopt)
	signal.Notify(r.sigs, syscall.SIGCHLD)
	go r.loop()
	return r, nil
}

func (r *Reaper) loop() {
	defer close(r.done)
	r.reap() // children that exited before we listened
	for {
		select {
		case <-r.sigs:
			r.reap()
		case <-r.stop:
			return
		}
	}
}

// reap collects every child that has exited. SIGCHLDs coalesce, so it loops
// until none is left.
func (r *Reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.holds > 0 {
		r.reapChildren()
		return
	}
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if p, ok := r.children[pid]; ok {
			delete(r.children, pid)
			p.status = ws
			close(p.done)
		} else if r.onOrphan != nil {
			r.onOrphan(pid, ws)
		}
	}
}

// reapChildren collects the processes this Reaper started that have
// exited, and nothing else.
func (r *Reaper) reapChildren() {
	for pid, p := range r.children {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		for errors.Is(err, unix.EINTR) {
			got, err = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		}
		if err == nil && got == pid {
			delete(r.children, pid)
			p.status = ws
			close(p.done)
		}
	}
}

// Adoptee is a child to adopt: its PID and when it was started.
type Adoptee struct {
	PID     int
	Started time.Time
}

// adopt makes each adoptee a Process of r, before the reaping begins. One
// that is not a child of this process (it was reaped before the exec, and
// its PID may be somebody else's now) is done at once, with exit status
// 255: its end was not seen.
func (r *Reaper) adopt(adopt []Adoptee) {
	for _, a := range adopt {
		p := &Process{Pid: a.PID, Started: a.Started, r: r, done: make(chan struct{})}
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, a.PID, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if errors.Is(err, unix.ECHILD) {
			p.status = unix.WaitStatus(255 << 8)
			close(p.done)
		} else {
			r.children[a.PID] = p
		}
		if r.adopted == nil {
			r.adopted = map[int]*Process{}
		}
		r.adopted[a.PID] = p
	}
}

// Adopted is the Process of an adoptee given to NewReaper, or nil.
func (r *Reaper) Adopted(pid int) *Process { return r.adopted[pid] }

// Freeze stops all reaping until release is called (release may be called
// more than once): across an exec of this process (Exec), whatever exits
// stays a zombie, its PID reserved, for the new image to reap.
func (r *Reaper) Freeze() (release func()) {
	r.mu.Lock()
	var once sync.Once
	return func() { once.Do(r.mu.Unlock) }
}

// HoldOrphans makes the Reaper leave alone every process it did not start,
// until release is called: code that starts and waits for a child of its
// own (tableflip, for a successor supervisor) then gets its exit status,
// instead of "no child processes". Orphans that exit meanwhile stay zombies
// until the release, which reaps them. release may be called more than
// once.
func (r *Reaper) HoldOrphans() (release func()) {
	r.mu.Lock()
	r.holds++
	r.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			r.holds--
			r.mu.Unlock()
			r.reap()
		})
	}
}

// Close stops reaping. Processes still running are not touched.
func (r *Reaper) Close() {
	signal.Stop(r.sigs)
	close(r.stop)
	<-r.done
}
