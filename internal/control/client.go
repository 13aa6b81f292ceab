package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
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
			return Response{}, fmt.Errorf("nobody listens on %s: the supervisor is not running (a stale socket file)", path)
		case errors.Is(err, os.ErrPermission):
			return Response{}, fmt.Errorf("%s: permission denied: run as root or as the supervisor's user", path)
		}
		return Response{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	b, _ := json.Marshal(req)
	if _, err := c.Write(append(b, '\n')); err != nil {
		return Response{}, fmt.Errorf("sending the request: %w", err)
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
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
	return resp, nil
}
