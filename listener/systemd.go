package listener

import (
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/procswitch/supervisor/internal/contract"
	"golang.org/x/sys/unix"
)

// inheritedFD is a socket passed by systemd socket activation.
type inheritedFD struct {
	fd   int
	name string
	used bool
}

// maxSystemdFDs bounds LISTEN_FDS: more sockets than this from systemd is
// a mistake, not a configuration.
const maxSystemdFDs = 4096

// takeSystemdFDs returns the sockets systemd passed to this process
// (LISTEN_FDS, with LISTEN_PID equal to our PID) and unsets the variables so
// that no child inherits them. Without LISTEN_FDS it returns nothing. It
// reads them leniently (contract.Lenient): the supervisor may find variables
// that something above it left behind, and takes what it can.
func takeSystemdFDs() ([]*inheritedFD, error) {
	passed, err := contract.ParseListenFDs(os.LookupEnv, os.Getpid(), contract.Lenient)
	count := os.Getenv(contract.EnvListenFDs)
	for _, k := range []string{contract.EnvListenFDs, contract.EnvListenPID, contract.EnvListenFDNames} {
		os.Unsetenv(k)
	}
	if err != nil {
		return nil, fmt.Errorf("listener: from systemd: %w", err)
	}
	if passed.Count > maxSystemdFDs {
		return nil, fmt.Errorf("listener: %s=%q from systemd: more than %d sockets", contract.EnvListenFDs, count, maxSystemdFDs)
	}
	fds := make([]*inheritedFD, passed.Count)
	for i := range fds {
		fd := contract.ListenFDsStart + i
		unix.CloseOnExec(fd)
		fds[i] = &inheritedFD{fd: fd, name: passed.Name(i)}
	}
	return fds, nil
}

// adopt turns an inherited fd into a Socket, describing it from the kernel.
// spec, when not nil, is what the command line asked for.
func adopt(in *inheritedFD, spec *Spec) (*Socket, error) {
	in.used = true
	network, addr, err := describe(in.fd)
	if err != nil {
		return nil, fmt.Errorf("listener: fd %d (%s) from systemd: %w", in.fd, in.name, err)
	}
	s := &Socket{Spec: Spec{Name: in.name, Network: network, Address: addr.String()}, Addr: addr, fd: in.fd, Inherited: true}
	if spec != nil {
		s.Name = spec.Name
		if spec.IsPacket() != s.IsPacket() || spec.IsUnix() && spec.Network != network {
			return nil, fmt.Errorf("listener: %s: systemd passed a %s socket under that name", spec, network)
		}
	}
	return s, nil
}

// describe finds a socket's network and local address.
func describe(fd int) (string, net.Addr, error) {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return "", nil, fmt.Errorf("not a socket: %w", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return "", nil, err
	}
	stream := typ == unix.SOCK_STREAM
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		if stream {
			return "tcp", &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}, nil
		}
		return "udp", &net.UDPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}, nil
	case *unix.SockaddrInet6:
		if stream {
			return "tcp", &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}, nil
		}
		return "udp", &net.UDPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}, nil
	case *unix.SockaddrUnix:
		network := map[int]string{unix.SOCK_STREAM: "unix", unix.SOCK_DGRAM: "unixgram", unix.SOCK_SEQPACKET: "unixpacket"}[typ]
		return network, &net.UnixAddr{Name: a.Name, Net: network}, nil
	}
	return "", nil, fmt.Errorf("unsupported socket family %T", sa)
}

// sameAddress reports whether an inherited socket is the one spec describes.
func sameAddress(s *Socket, spec Spec) bool {
	if s.IsUnix() != spec.IsUnix() || s.IsPacket() != spec.IsPacket() {
		return false
	}
	if spec.IsUnix() {
		return s.Network == spec.Network && s.Address == spec.Address
	}
	want, err := net.ResolveTCPAddr("tcp", spec.Address)
	if err != nil {
		return false
	}
	host, port, _ := net.SplitHostPort(s.Address)
	got := net.ParseIP(host)
	return port == strconv.Itoa(want.Port) && (want.IP == nil && got.IsUnspecified() || want.IP.Equal(got))
}
