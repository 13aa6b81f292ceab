package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/procswitch/supervisor/handoff"
	"golang.org/x/sys/unix"
)

// barrierTimeout bounds the wait for the supervisor to process a barrier.
const barrierTimeout = 5 * time.Second

// notifyBarrier is sd_notify_barrier(3): it sends "BARRIER=1" with the write
// end of a pipe over the notify socket at addr and waits, at most timeout,
// until the supervisor has closed it, which it does once it has processed
// every message sent before. A worker calls it after HANDOVER=saved so that
// it exits only once the supervisor has taken every stored connection:
// otherwise the supervisor may see the exit before the last FDSTORE=1
// messages, and drop them (see the report on the supervisor's notify
// ordering). Our supervisor closes the fds of any message it does not
// store, and systemd implements BARRIER=1, so this works under both. With
// no notify socket it does nothing.
func notifyBarrier(addr string, timeout time.Duration) error {
	if addr == "" {
		return nil
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("barrier: %w", err)
	}
	defer unix.Close(p[0])
	err := sendWithFD(addr, "BARRIER=1", p[1])
	unix.Close(p[1])
	if err != nil {
		return fmt.Errorf("barrier: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for {
		pfd := []unix.PollFd{{Fd: int32(p[0])}} // POLLHUP is always reported
		n, err := unix.Poll(pfd, int(time.Until(deadline).Milliseconds())+1)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return fmt.Errorf("barrier: %w", err)
		case n > 0 && pfd[0].Revents&unix.POLLHUP != 0:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("barrier: the supervisor did not process it within %v", timeout)
		}
	}
}

func sendWithFD(addr, msg string, fd int) error {
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	tv := unix.NsecToTimeval(barrierTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return err
	}
	// An address beginning with '@' is abstract: SockaddrUnix maps it.
	for {
		err := unix.Sendmsg(s, []byte(msg), unix.UnixRights(fd), &unix.SockaddrUnix{Name: addr}, 0)
		if err != unix.EINTR { // with SO_SNDTIMEO a signal is not restarted
			return err
		}
	}
}

// notifyAddr is NOTIFY_SOCKET, read before handoff.New unsets it.
func notifyAddr() string { return os.Getenv(handoff.EnvNotifySocket) }
