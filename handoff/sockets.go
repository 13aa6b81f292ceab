package handoff

import (
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Names returns the names of the passed fds, in fd order: the first is fd 3.
// Several fds may share a name (systemd gives all sockets of one .socket unit
// the unit's name); lookups by name then find the first.
func (w *Worker) Names() []string {
	names := make([]string, len(w.socks))
	for i, s := range w.socks {
		names[i] = s.name
	}
	return names
}

// Listener returns the passed listening stream socket (TCP or Unix) called
// name. The fd becomes the listener: asking again returns the same listener,
// and closing it closes this process's copy of the socket. Unix listeners are
// set not to unlink their path on Close: the supervisor owns it.
func (w *Worker) Listener(name string) (net.Listener, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, err := w.byName(name)
	if err != nil {
		return nil, err
	}
	return s.listener()
}

// PacketConn returns the passed datagram socket (UDP or Unix) called name.
// As with Listener, the fd becomes the conn and asking again returns it.
func (w *Worker) PacketConn(name string) (net.PacketConn, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, err := w.byName(name)
	if err != nil {
		return nil, err
	}
	return s.packetConn()
}

// File returns the passed fd called name as a file, whatever it is (a stored
// connection, a pipe). The caller owns the file; the fd cannot be taken again.
func (w *Worker) File(name string) (*os.File, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, err := w.byName(name)
	if err != nil {
		return nil, err
	}
	if !s.held {
		return nil, s.taken()
	}
	s.held, s.kind = false, "file"
	return os.NewFile(uintptr(s.fd), s.name), nil
}

// Listen returns the passed socket called name, so that the same binary
// runs under the supervisor (or systemd) and on its own. When sockets were
// passed, it is the one called name, whatever its address, or else the only
// one passed if it is not taken yet (a socket nobody named); otherwise
// ErrNoSocket, since binding address then would make a socket no other
// generation shares. When no sockets were passed, it listens on network and
// address.
func (w *Worker) Listen(name, network, address string) (net.Listener, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.socks) == 0 {
		ln, err := net.Listen(network, address)
		if err != nil {
			return nil, fmt.Errorf("handoff: %w", err)
		}
		return ln, nil
	}
	s, err := w.pick(name)
	if err != nil {
		return nil, err
	}
	return s.listener()
}

// ListenPacket is Listen for datagram sockets: the passed socket called name
// (or the only one passed), else, when no sockets were passed, a new one.
func (w *Worker) ListenPacket(name, network, address string) (net.PacketConn, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.socks) == 0 {
		pc, err := net.ListenPacket(network, address)
		if err != nil {
			return nil, fmt.Errorf("handoff: %w", err)
		}
		return pc, nil
	}
	s, err := w.pick(name)
	if err != nil {
		return nil, err
	}
	return s.packetConn()
}

func (w *Worker) byName(name string) (*socket, error) {
	for _, s := range w.socks {
		if s.name == name {
			return s, nil
		}
	}
	return nil, fmt.Errorf("handoff: socket %q: %w (passed: %s)", name, ErrNoSocket, w.passed())
}

// pick is byName with the single-socket fallback of Listen.
func (w *Worker) pick(name string) (*socket, error) {
	s, err := w.byName(name)
	if err != nil && len(w.socks) == 1 && w.socks[0].kind == "" {
		return w.socks[0], nil
	}
	return s, err
}

func (w *Worker) passed() string {
	if len(w.socks) == 0 {
		return "none"
	}
	return "\"" + strings.Join(w.Names(), "\", \"") + "\""
}

func (s *socket) listener() (net.Listener, error) {
	if ln, ok := s.ln.(net.Listener); ok {
		return ln, nil
	}
	if !s.held {
		return nil, s.taken()
	}
	listening, err := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return nil, fmt.Errorf("handoff: socket %q (fd %d): %w", s.name, s.fd, err)
	}
	if listening == 0 {
		return nil, fmt.Errorf("handoff: socket %q (fd %d) is not a listening socket", s.name, s.fd)
	}
	var ln net.Listener
	err = s.withFile(func(f *os.File) (err error) { ln, err = net.FileListener(f); return err })
	if err != nil {
		return nil, fmt.Errorf("handoff: socket %q (fd %d): %w", s.name, s.fd, err)
	}
	if ul, ok := ln.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
	s.adopt("listener", ln)
	return ln, nil
}

func (s *socket) packetConn() (net.PacketConn, error) {
	if pc, ok := s.ln.(net.PacketConn); ok {
		return pc, nil
	}
	if !s.held {
		return nil, s.taken()
	}
	typ, err := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("handoff: socket %q (fd %d): %w", s.name, s.fd, err)
	}
	if typ != unix.SOCK_DGRAM {
		return nil, fmt.Errorf("handoff: socket %q (fd %d) is not a datagram socket", s.name, s.fd)
	}
	var pc net.PacketConn
	err = s.withFile(func(f *os.File) (err error) { pc, err = net.FilePacketConn(f); return err })
	if err != nil {
		return nil, fmt.Errorf("handoff: socket %q (fd %d): %w", s.name, s.fd, err)
	}
	s.adopt("packet conn", pc)
	return pc, nil
}

// adopt records what the fd became and closes the original: the listener or
// conn holds the only copy, so closing it closes this process's socket.
func (s *socket) adopt(kind string, v any) {
	unix.Close(s.fd)
	s.held, s.kind, s.ln = false, kind, v
}

// withFile calls fn with a temporary file of a duplicate of the fd. The fd
// itself never becomes an *os.File, which would put it in this process's
// epoll set at once: a sign, to the supervisor's "tcp" readiness probe, that
// the worker accepts on a socket it may not serve yet.
func (s *socket) withFile(fn func(*os.File) error) error {
	dup, err := unix.FcntlInt(uintptr(s.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(dup), s.name)
	defer f.Close()
	return fn(f)
}

func (s *socket) taken() error {
	if s.kind == "closed" {
		return fmt.Errorf("handoff: socket %q (fd %d) was closed by Worker.Close", s.name, s.fd)
	}
	return fmt.Errorf("handoff: socket %q (fd %d) was already taken as a %s", s.name, s.fd, s.kind)
}
