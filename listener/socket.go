package listener

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Socket is one socket the supervisor owns. Its fd is a duplicate, made
// through SyscallConn, that stays open for the supervisor's whole life and is
// handed to every worker; the supervisor itself never accepts on it.
type Socket struct {
	Spec
	Addr      net.Addr // the bound address (the real port when 0 was asked for)
	Inherited bool     // taken from systemd, or from the supervisor this one replaced, rather than bound here

	// OwnsPath: a unix socket file this supervisor (or the one it replaced)
	// created, removed by Set.Close unless the set was handed on.
	OwnsPath bool

	fd    int       // owned duplicate, close-on-exec
	owner io.Closer // the Go listener or packet conn the fd was taken from, if any
}

// FD returns the socket's file descriptor. It stays valid until Close.
// Sockets bound here start in blocking mode, as systemd passes them; a worker
// may switch the (shared) mode, as Go's runtime does.
func (s *Socket) FD() int { return s.fd }

// Inode returns the socket's inode number, which identifies it in
// /proc/PID/fd and /proc/PID/fdinfo of the processes that hold it.
func (s *Socket) Inode() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(s.fd, &st); err != nil {
		return 0, fmt.Errorf("listener: fstat %s: %w", s.Name, err)
	}
	return st.Ino, nil
}

func (s *Socket) close() error {
	err := unix.Close(s.fd)
	if s.owner != nil {
		if err2 := s.owner.Close(); err == nil {
			err = err2
		}
	}
	return err
}

// bind opens the socket the spec names.
func bind(spec Spec) (*Socket, error) {
	if spec.IsUnix() {
		if err := removeStaleUnix(spec); err != nil {
			return nil, err
		}
	}
	var (
		c    io.Closer
		addr net.Addr
		err  error
	)
	if spec.IsPacket() {
		var pc net.PacketConn
		pc, err = net.ListenPacket(spec.Network, spec.Address)
		if err == nil {
			c, addr = pc, pc.LocalAddr()
		}
	} else {
		var ln net.Listener
		ln, err = net.Listen(spec.Network, spec.Address)
		if err == nil {
			if ul, ok := ln.(*net.UnixListener); ok {
				// Only the last owner unlinks the path, when the supervisor stops.
				ul.SetUnlinkOnClose(false)
			}
			c, addr = ln, ln.Addr()
		}
	}
	if err != nil {
		return nil, explainBindError(spec, err)
	}
	fd, err := dupConn(c.(syscall.Conn))
	if err == nil {
		// Blocking, as systemd passes sockets by default (NonBlocking=no): a
		// program written for socket activation may accept(2) and expect to
		// wait. The mode belongs to the socket, shared by every copy; the
		// supervisor never accepts on its own.
		err = unix.SetNonblock(fd, false)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("listener: %s: %w", spec, err)
	}
	return &Socket{Spec: spec, Addr: addr, fd: fd, owner: c, OwnsPath: spec.IsUnix()}, nil
}

// dupConn duplicates a connection's fd (close-on-exec) through SyscallConn,
// which, unlike os.File's Fd, leaves the socket's blocking mode alone.
func dupConn(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var dupErr error
	err = rc.Control(func(raw uintptr) {
		fd, dupErr = unix.FcntlInt(raw, unix.F_DUPFD_CLOEXEC, 0)
	})
	if err != nil {
		return -1, err
	}
	return fd, dupErr
}

// removeStaleUnix removes a socket file left behind by a process that is
// gone, and refuses to touch one that somebody still listens on.
func removeStaleUnix(spec Spec) error {
	if spec.Address[0] == '@' {
		return nil
	}
	fi, err := os.Lstat(spec.Address)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listener: %s: %w", spec, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("listener: %s: %s exists and is not a socket: remove it or choose another path", spec, spec.Address)
	}
	// Connecting tells a live socket from a stale file, datagram sockets too.
	if c, err := net.Dial(spec.Network, spec.Address); err == nil {
		c.Close()
		return fmt.Errorf("listener: %s: address already in use: another process listens on %s (is another supervisor running?)", spec, spec.Address)
	}
	return os.Remove(spec.Address)
}

func explainBindError(spec Spec, err error) error {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("listener: %s: address already in use: is another supervisor or server running on %s? (ss -lnp shows who holds it)", spec, spec.Address)
	case errors.Is(err, syscall.EACCES) && !spec.IsUnix():
		return fmt.Errorf("listener: %s: permission denied: ports below 1024 need root or CAP_NET_BIND_SERVICE", spec)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("listener: %s: permission denied: the supervisor cannot create %s", spec, spec.Address)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("listener: %s: address not available: %s is not an address of this host", spec, spec.Address)
	case errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("listener: %s: the directory of %s does not exist", spec, spec.Address)
	}
	return fmt.Errorf("listener: %s: %w", spec, err)
}

func removeIfSocket(path string) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
}
