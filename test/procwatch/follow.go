package procwatch

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Find waits up to d for the first line, from index from on, that match
// accepts, and returns it with its index. Unlike Proc.Find it does not stop
// reading when the process that Start started exits: the output goes on as
// long as anyone holds the pipe, as the successors of a supervisor that
// upgraded its own binary do. what names the line in the error, which wraps
// ErrTimeout, or ErrEnded when the output ended first.
func (l *Log) Find(from int, d time.Duration, what string, match func(Entry) bool) (Entry, int, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		es, eof, changed := l.since(from)
		for i, e := range es {
			if match(e) {
				return e, from + i, nil
			}
		}
		from += len(es)
		if eof {
			return Entry{}, from, fmt.Errorf("output ended before %s: %w\n%s", what, ErrEnded, l.Tail(tailLines))
		}
		select {
		case <-changed:
		case <-timer.C:
			return Entry{}, from, fmt.Errorf("no %s within %v: %w\n%s", what, d, ErrTimeout, l.Tail(tailLines))
		}
	}
}

// WaitStatus waits up to d for the watched process to exit, reaps it and
// returns its wait status. The process must be a child of ours by then, such
// as a process re-parented to us (see BecomeSubreaper) when its parent
// exited; the error says when it is not, or when it did not exit within d.
func (w *ExitWatch) WaitStatus(d time.Duration) (unix.WaitStatus, error) {
	if w.fd < 0 {
		return 0, fmt.Errorf("procwatch: process %d was gone before it was watched: its status is lost", w.pid)
	}
	deadline := time.Now().Add(d)
	for {
		ms := max(0, int(time.Until(deadline)/time.Millisecond))
		fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, ms)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("procwatch: poll on the pidfd of %d: %w", w.pid, err)
		}
		if n == 0 {
			return 0, fmt.Errorf("procwatch: process %d did not exit within %v: %w", w.pid, d, ErrTimeout)
		}
		break
	}
	// It is a zombie now: its PID cannot be reused before we reap it.
	var ws unix.WaitStatus
	for {
		pid, err := unix.Wait4(w.pid, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("procwatch: wait for %d: %w (not a child of ours: its parent reaps it)", w.pid, err)
		}
		if pid != w.pid {
			return 0, fmt.Errorf("procwatch: wait for %d: not reapable yet", w.pid)
		}
		return ws, nil
	}
}
