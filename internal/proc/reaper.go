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
	sigs     chan os.Signal
	stop     chan struct{}
	done     chan struct{}
}

// NewReaper makes this process a child subreaper and starts reaping.
// onOrphan, if not nil, is told about every reaped process that this Reaper
// did not start (an orphaned grandchild).
func NewReaper(onOrphan func(pid int, status unix.WaitStatus)) (*Reaper, error) {
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
