package procwatch

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// BecomeSubreaper makes this process the reaper of its orphaned
// descendants: the workers of a supervisor that dies become our children,
// for ReapOrphans, wherever PID 1 would not reap them.
func BecomeSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("procwatch: prctl(PR_SET_CHILD_SUBREAPER): %w", err)
	}
	return nil
}

// CloseInheritedFDs marks every fd above stdio close-on-exec, so that
// whatever a shell or CI runner leaked to us does not reach the processes we
// start: they get stdio and what we pass them, as under systemd.
func CloseInheritedFDs() error {
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("procwatch: close_range: %w", err)
	}
	return nil
}

// ExitWatch tells when a process, a child of ours or not, has exited: a
// pidfd becomes readable then.
type ExitWatch struct {
	pid int
	fd  int // -1 when the process was gone already
}

// WatchExit opens a pidfd for pid. Open it while the process is known to
// live, so that a reused PID cannot be mistaken for it.
func WatchExit(pid int) (*ExitWatch, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return &ExitWatch{pid: pid, fd: -1}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("procwatch: pidfd_open(%d): %w", pid, err)
	}
	return &ExitWatch{pid: pid, fd: fd}, nil
}

// PID is the process watched.
func (w *ExitWatch) PID() int { return w.pid }

// Wait waits up to d for the process to exit, and reaps it when it is a
// child of ours. It reports whether the process exited.
func (w *ExitWatch) Wait(d time.Duration) bool {
	if w.fd < 0 {
		return true
	}
	deadline := time.Now().Add(d)
	for {
		ms := max(0, int(time.Until(deadline)/time.Millisecond))
		fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, ms)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if n == 0 || err != nil {
			return false
		}
		break
	}
	// Reap it if it was re-parented to us; P_PIDFD names exactly this
	// process, whatever happened to its PID.
	var info unix.Siginfo
	_ = unix.Waitid(unix.P_PIDFD, w.fd, &info, unix.WEXITED|unix.WNOHANG, nil)
	return true
}

// Close closes the pidfd.
func (w *ExitWatch) Close() {
	if w.fd >= 0 {
		unix.Close(w.fd)
		w.fd = -1
	}
}

// WaitExited waits up to d, in all, for each watched process to exit and
// returns the PIDs of those that did not.
func WaitExited(watches []*ExitWatch, d time.Duration) []int {
	deadline := time.Now().Add(d)
	var alive []int
	for _, w := range watches {
		if !w.Wait(time.Until(deadline)) {
			alive = append(alive, w.pid)
		}
	}
	return alive
}

// ReapOrphans kills (SIGKILL) and reaps the children of ours that Start and
// Run did not start: workers re-parented to us when their supervisor died.
// When under is not "", a live child whose executable is not in that
// directory is left alone. It returns the orphans it killed or found dead,
// and an error naming those left alone and those not reaped within bound.
func ReapOrphans(under string, bound time.Duration) ([]int, error) {
	var watches []*ExitWatch
	var errs []error
	for _, st := range Children(os.Getpid()) {
		if isStarted(st.PID) {
			continue
		}
		if st.State != 'Z' && under != "" {
			exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", st.PID))
			if !strings.HasPrefix(exe, under+string(filepath.Separator)) {
				errs = append(errs, fmt.Errorf("child process %d (%s) is not one we started; left alone", st.PID, exe))
				continue
			}
		}
		w, err := WatchExit(st.PID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		defer w.Close()
		if st.State != 'Z' {
			syscall.Kill(st.PID, syscall.SIGKILL)
		}
		watches = append(watches, w)
	}
	var pids []int
	for _, w := range watches {
		pids = append(pids, w.pid)
	}
	if alive := WaitExited(watches, bound); len(alive) > 0 {
		errs = append(errs, fmt.Errorf("processes %v not reaped within %v of SIGKILL", alive, bound))
	}
	return pids, errors.Join(errs...)
}
