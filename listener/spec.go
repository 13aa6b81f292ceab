package listener

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Spec says which socket to open: `[NAME=]NETWORK://ADDRESS`.
type Spec struct {
	Name    string // what the worker sees in LISTEN_FDNAMES
	Network string // tcp, tcp4, tcp6, udp, udp4, udp6, unix, unixgram, unixpacket
	Address string // host:port, or a filesystem path for unix networks
}

var networks = map[string]bool{
	"tcp": true, "tcp4": true, "tcp6": true,
	"udp": true, "udp4": true, "udp6": true,
	"unix": true, "unixgram": true, "unixpacket": true,
}

// DefaultName is the name of the listener at position i when the spec names
// none: "listen0", "listen1", and so on, in the order the flags were given.
func DefaultName(i int) string { return "listen" + strconv.Itoa(i) }

// ParseSpec parses `[NAME=]NETWORK://ADDRESS`; i is its position among the
// listeners and gives the default name.
func ParseSpec(s string, i int) (Spec, error) {
	var spec Spec
	rest := s
	if eq := strings.Index(s, "="); eq >= 0 && eq < strings.Index(s, "://") {
		spec.Name, rest = s[:eq], s[eq+1:]
		if err := checkName(spec.Name); err != nil {
			return Spec{}, fmt.Errorf("listen %q: %w", s, err)
		}
	} else {
		spec.Name = DefaultName(i)
	}
	network, addr, ok := strings.Cut(rest, "://")
	if !ok {
		return Spec{}, fmt.Errorf("listen %q: want [NAME=]NETWORK://ADDRESS, such as tcp://127.0.0.1:8080 or unix:///run/app.sock", s)
	}
	spec.Network, spec.Address = strings.ToLower(network), addr
	if !networks[spec.Network] {
		return Spec{}, fmt.Errorf("listen %q: unknown network %q: use tcp, tcp4, tcp6, udp, udp4, udp6, unix, unixgram or unixpacket", s, network)
	}
	if err := spec.checkAddress(); err != nil {
		return Spec{}, fmt.Errorf("listen %q: %w", s, err)
	}
	return spec, nil
}

func checkName(name string) error {
	if name == "" {
		return errors.New("empty name before '='")
	}
	if len(name) > 255 {
		return errors.New("name longer than 255 characters")
	}
	for _, r := range name {
		if r < 0x21 || r > 0x7e || r == ':' {
			return fmt.Errorf("name %q: use printable ASCII without ':' or spaces (LISTEN_FDNAMES separates names with ':')", name)
		}
	}
	return nil
}

func (s Spec) checkAddress() error {
	if s.IsUnix() {
		if s.Address == "" {
			return errors.New("empty socket path: write unix:///path/to/app.sock")
		}
		if s.Address[0] != '/' && s.Address[0] != '@' {
			return fmt.Errorf("socket path %q is not absolute: write unix:///full/path.sock (three slashes)", s.Address)
		}
		return nil
	}
	host, port, err := net.SplitHostPort(s.Address)
	if err != nil {
		return fmt.Errorf("address %q: want HOST:PORT, such as 127.0.0.1:8080 or [::1]:8080", s.Address)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q: want a number from 0 to 65535", port)
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		return fmt.Errorf("host %q: want an IP address (such as 127.0.0.1 or [::1]) or nothing for all interfaces", host)
	}
	return nil
}

// IsUnix reports whether the spec names a unix-domain socket.
func (s Spec) IsUnix() bool { return strings.HasPrefix(s.Network, "unix") }

// IsPacket reports whether the socket carries datagrams rather than
// accepting connections.
func (s Spec) IsPacket() bool {
	return strings.HasPrefix(s.Network, "udp") || s.Network == "unixgram"
}

func (s Spec) String() string { return s.Name + "=" + s.Network + "://" + s.Address }
