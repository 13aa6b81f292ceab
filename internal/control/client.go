package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Do sends req to the control socket at path and returns the response,
// waiting at most timeout for all of it.
func Do(path string, req Request, timeout time.Duration) (Response, error) {
	if path == "" {
		return Response{}, ErrNoPath
	}
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist):
			return Response{}, fmt.Errorf("no control socket at %s: is the supervisor running, with this --control path?", path)
		case errors.Is(err, syscall.ECONNREFUSED):
			if fi, serr := os.Stat(path); serr == nil && fi.Mode().Type() != os.ModeSocket {
				return Response{}, fmt.Errorf("%s is not a socket: give the --control path the supervisor was started with", path)
			}
			return Response{}, fmt.Errorf("nobody listens on %s: the supervisor is not running (a stale socket file)", path)
		case errors.Is(err, os.ErrPermission):
			return Response{}, fmt.Errorf("%s: permission denied: run as root or as the supervisor's user", path)
		}
		return Response{}, err
	}
	defer c.Close()
	deadline := time.Now().Add(timeout)
	c.SetDeadline(deadline)
	b, _ := json.Marshal(req)
	_, writeErr := c.Write(append(b, '\n'))
	// Read even when the write failed: a supervisor that refuses us answers
	// before it reads, and closes.
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil && writeErr != nil {
		return Response{}, fmt.Errorf("sending the request: %w", writeErr)
	}
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return Response{}, fmt.Errorf("no answer within %v (an upgrade may still be running: see `supervisor ctl status`)", timeout)
		}
		return Response{}, fmt.Errorf("reading the answer: %w (did the supervisor stop?)", err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return Response{}, fmt.Errorf("malformed answer from the supervisor: %v", err)
	}
	if req.Cmd == CmdStop && req.Wait && resp.OK {
		// The supervisor closes the connection when its workers have
		// drained, and exits right after: wait for both.
		if _, err := io.Copy(io.Discard, c); errors.Is(err, os.ErrDeadlineExceeded) {
			return Response{}, fmt.Errorf("the supervisor is still draining after %v", timeout)
		}
		if !waitExit(resp.PID, time.Until(deadline)) {
			return Response{}, fmt.Errorf("the supervisor (pid %d) has not exited within %v", resp.PID, timeout)
		}
	}
	return resp, nil
}

// waitExit waits up to d for process pid to exit: a pidfd becomes readable
// then (the process need not be our child).
func waitExit(pid int, d time.Duration) bool {
	if pid <= 0 {
		return true
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return errors.Is(err, unix.ESRCH) // gone already; else we cannot tell
	}
	defer unix.Close(fd)
	end := time.Now().Add(d)
	for {
		ms := int(time.Until(end).Milliseconds())
		if ms <= 0 {
			return false
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, ms)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0
	}
}
