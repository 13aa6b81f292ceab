package handoff

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Conn is a client connection handed over from the previous worker, under
// the name that worker stored it with.
type Conn struct {
	Name string
	net.Conn
}

// HandoverMode reports whether the supervisor runs this worker in handover
// mode (--mode handover): it then restores its state from SnapshotPath at
// start and, on the drain signal, saves it there and hands its connections
// over with StoreConn and HandoverSaved.
func (w *Worker) HandoverMode() bool { return os.Getenv(EnvMode) == ModeHandover }

// SnapshotPath is where the worker restores its state from and saves it to;
// "" when not in handover mode.
func (w *Worker) SnapshotPath() string { return os.Getenv(EnvSnapshot) }

// ErrHandoverAborted means the supervisor closed the handover connection
// before GO: the upgrade was called off, and this worker should exit.
var ErrHandoverAborted = errors.New("handoff: handover aborted by the supervisor")

// AwaitHandover returns the connections handed over from the previous
// worker. Call it once the worker is initialised, before it restores its
// state and before it accepts.
//
// In a worker started ahead of a handover it says WAITING to the supervisor
// and blocks, while the previous worker still serves, until that worker has
// saved its snapshot; the supervisor then passes the stored connections and
// says GO. Otherwise (a first start, a restart after a crash, a rollback)
// it returns at once with the connections passed among LISTEN_FDS, if any.
// ctx bounds the wait.
func (w *Worker) AwaitHandover(ctx context.Context) ([]Conn, error) {
	conns := w.passedConns()
	fdStr := os.Getenv(EnvHandoverFD)
	if fdStr == "" {
		return conns, nil
	}
	os.Unsetenv(EnvHandoverFD)
	fd, err := strconv.Atoi(fdStr)
	if err != nil || fd < ListenFDsStart {
		return conns, fmt.Errorf("handoff: %s=%q is not an fd", EnvHandoverFD, fdStr)
	}
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "handover")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return conns, fmt.Errorf("handoff: handover connection: %w", err)
	}
	defer c.Close()
	uc := c.(*net.UnixConn)
	if _, err := uc.Write([]byte(HandoverWaiting)); err != nil {
		return conns, fmt.Errorf("handoff: handover: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { uc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	received, err := receiveStore(uc)
	if ctx.Err() != nil {
		closeConns(received)
		return conns, ctx.Err()
	}
	return append(conns, received...), err
}

// receiveStore reads "FDS name:…" messages with their fds until GO.
func receiveStore(uc *net.UnixConn) ([]Conn, error) {
	var conns []Conn
	buf := make([]byte, 64*1024)
	oob := make([]byte, unix.CmsgSpace(4*253))
	for {
		n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
		if err != nil {
			return conns, fmt.Errorf("handoff: handover: %w", err)
		}
		if n == 0 && oobn == 0 {
			return conns, ErrHandoverAborted
		}
		msg := string(buf[:n])
		if msg == HandoverGo {
			return conns, nil
		}
		fds, err := parseRights(oob[:oobn])
		if err != nil {
			return conns, err
		}
		names := strings.Split(strings.TrimPrefix(msg, HandoverFDsKey), ":")
		for i, fd := range fds {
			name := "stored"
			if i < len(names) {
				name = names[i]
			}
			if c, err := fdConn(fd, name); err == nil {
				conns = append(conns, Conn{Name: name, Conn: c})
			}
		}
	}
}

func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("handoff: handover: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		if got, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, got...)
		}
	}
	return fds, nil
}

// fdConn turns a received fd into a net.Conn; the fd is consumed.
func fdConn(fd int, name string) (net.Conn, error) {
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	return net.FileConn(f)
}

// passedConns takes the passed fds that are connected stream sockets (not
// listening): the connections of a cold start in handover mode.
func (w *Worker) passedConns() []Conn {
	w.mu.Lock()
	defer w.mu.Unlock()
	var conns []Conn
	for _, s := range w.socks {
		if !s.held || s.kind != "" {
			continue
		}
		typ, err1 := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_TYPE)
		listening, err2 := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		if err1 != nil || err2 != nil || typ != unix.SOCK_STREAM || listening != 0 {
			continue
		}
		var c net.Conn
		if err := s.withFile(func(f *os.File) (err error) { c, err = net.FileConn(f); return err }); err != nil {
			continue
		}
		s.adopt("conn", c)
		conns = append(conns, Conn{Name: s.name, Conn: c})
	}
	return conns
}

func closeConns(conns []Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// StoreConn hands c to the supervisor's fd store under name (FDSTORE=1 with
// FDNAME=name, as systemd's fd store), for the next worker. The name may not
// contain ':' or whitespace. The worker keeps its own copy: close it after
// HandoverSaved, or just exit.
func (w *Worker) StoreConn(name string, c syscall.Conn) error {
	if name == "" || strings.ContainsAny(name, ": \t\n") {
		return fmt.Errorf("handoff: store %q: a name must be non-empty, without ':' or whitespace", name)
	}
	if w.notifyAddr == "" {
		return errors.New("handoff: store: not supervised (no NOTIFY_SOCKET)")
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("handoff: store %s: %w", name, err)
	}
	var sendErr error
	err = rc.Control(func(fd uintptr) {
		sendErr = w.notifyWithFDs(MsgFDStore+"\n"+MsgFDNameKey+name, int(fd))
	})
	if err == nil {
		err = sendErr
	}
	if err != nil {
		return fmt.Errorf("handoff: store %s: %w", name, err)
	}
	return nil
}

// HandoverSaved tells the supervisor that the snapshot is committed and
// every connection stored: the next worker may restore. It returns once the
// supervisor has processed that and every message before it (Barrier), so
// the worker may exit without its exit overtaking a stored connection.
func (w *Worker) HandoverSaved() error {
	if err := w.Notify(MsgHandoverSaved); err != nil {
		return err
	}
	return w.Barrier(notifyTimeout)
}

// Barrier waits, at most timeout, until the supervisor has processed every
// notification sent before it, as sd_notify_barrier(3): it sends BARRIER=1
// with the write end of a pipe, which the supervisor (or systemd) closes
// once it got there. A no-op returning nil when not supervised.
func (w *Worker) Barrier(timeout time.Duration) error {
	if w.notifyAddr == "" {
		return nil
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("handoff: barrier: %w", err)
	}
	defer unix.Close(p[0])
	err := w.notifyWithFDs("BARRIER=1", p[1])
	unix.Close(p[1])
	if err != nil {
		return fmt.Errorf("handoff: barrier: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for {
		pfd := []unix.PollFd{{Fd: int32(p[0])}} // POLLHUP is always reported
		n, err := unix.Poll(pfd, int(time.Until(deadline).Milliseconds())+1)
		switch {
		case err == unix.EINTR:
		case err != nil:
			return fmt.Errorf("handoff: barrier: %w", err)
		case n > 0:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("handoff: barrier: the supervisor did not process it within %v", timeout)
		}
	}
}

// notifyWithFDs sends one notify datagram with fds attached. It reuses one
// socket, since a handover stores thousands of connections; a send blocks at
// most notifyTimeout when the supervisor's queue is full.
func (w *Worker) notifyWithFDs(msg string, fds ...int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.storeFD <= 0 {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		tv := unix.NsecToTimeval(notifyTimeout.Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
			unix.Close(fd)
			return err
		}
		w.storeFD = fd
	}
	for {
		err := unix.Sendmsg(w.storeFD, []byte(msg), unix.UnixRights(fds...), &unix.SockaddrUnix{Name: w.notifyAddr}, 0)
		// A send with SO_SNDTIMEO is not restarted after a signal (signal(7)),
		// and the Go runtime signals its threads (preemption): try again.
		if err != unix.EINTR {
			return err
		}
	}
}
