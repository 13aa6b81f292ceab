package listener

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// inheritedFD is a socket passed by systemd socket activation.
type inheritedFD struct {
	fd   int
	name string
	used bool
}

// takeSystemdFDs returns the sockets systemd passed to this process
// (LISTEN_FDS, with LISTEN_PID equal to our PID) and unsets the variables so
// that no child inherits them. Without LISTEN_FDS it returns nothing.
func takeSystemdFDs() ([]*inheritedFD, error) {
	count, pid, names := os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDNAMES")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDNAMES")
	if count == "" {
		return nil, nil
	}
	if pid != strconv.Itoa(os.Getpid()) {
		// Meant for another process (our parent's child, say): not ours.
		return nil, nil
	}
	n, err := strconv.Atoi(count)
	if err != nil || n < 0 || n > 4096 {
		return nil, fmt.Errorf("listener: LISTEN_FDS=%q from systemd is not a count of sockets", count)
	}
	var nameList []string
	if names != "" {
		nameList = strings.Split(names, ":")
	}
	fds := make([]*inheritedFD, n)
	for i := range fds {
		fd := 3 + i
		unix.CloseOnExec(fd)
		name := "unknown" // what sd_listen_fds_with_names reports without names
		if i < len(nameList) && nameList[i] != "" {
			name = nameList[i]
		}
		fds[i] = &inheritedFD{fd: fd, name: name}
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
