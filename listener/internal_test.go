package listener

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestSameAddress(t *testing.T) {
	tests := []struct {
		network, addr string // the inherited socket, as describe reports it
		spec          string
		want          bool
	}{
		{"tcp", "127.0.0.1:8080", "tcp://127.0.0.1:8080", true},
		{"tcp", "127.0.0.1:8080", "tcp4://127.0.0.1:8080", true},
		{"tcp", "127.0.0.1:8080", "tcp://127.0.0.1:8081", false},
		{"tcp", "127.0.0.1:8080", "tcp://127.0.0.2:8080", false},
		{"tcp", "127.0.0.1:8080", "tcp://127.0.0.1:0", false},
		{"tcp", "127.0.0.1:8080", "udp://127.0.0.1:8080", false},
		{"tcp", "127.0.0.1:8080", "unix:///run/x.sock", false},
		{"tcp", "0.0.0.0:8080", "tcp://:8080", true},
		{"tcp", "[::]:8080", "tcp://:8080", true},
		{"tcp", "127.0.0.1:8080", "tcp://:8080", false},
		{"tcp", "[::1]:8080", "tcp6://[::1]:8080", true},
		{"tcp", "[::1]:8080", "tcp://127.0.0.1:8080", false},
		{"udp", "127.0.0.1:53", "udp://127.0.0.1:53", true},
		{"udp", "127.0.0.1:53", "tcp://127.0.0.1:53", false},
		{"unix", "/run/a.sock", "unix:///run/a.sock", true},
		{"unix", "/run/a.sock", "unix:///run/b.sock", false},
		{"unix", "/run/a.sock", "unixgram:///run/a.sock", false},
		{"unixgram", "/run/a.sock", "unixgram:///run/a.sock", true},
		{"unix", "@abs", "unix://@abs", true},
	}
	for _, tt := range tests {
		spec, err := ParseSpec(tt.spec, 0)
		if err != nil {
			t.Fatal(err)
		}
		s := &Socket{Spec: Spec{Network: tt.network, Address: tt.addr}}
		if got := sameAddress(s, spec); got != tt.want {
			t.Errorf("sameAddress(%s %s, %s) = %v, want %v", tt.network, tt.addr, tt.spec, got, tt.want)
		}
	}
}

// describe reports what the kernel knows of a socket, whatever network the
// spec that opened it used.
func TestDescribe(t *testing.T) {
	dir := t.TempDir()
	specs := []string{
		"tcp://127.0.0.1:0", "tcp4://127.0.0.1:0", "udp://127.0.0.1:0",
		"unix://" + filepath.Join(dir, "s"), "unixgram://" + filepath.Join(dir, "g"),
		"unixpacket://" + filepath.Join(dir, "p"),
	}
	want := []string{"tcp", "tcp", "udp", "unix", "unixgram", "unixpacket"}
	if ln, err := net.Listen("tcp6", "[::1]:0"); err == nil {
		ln.Close()
		specs = append(specs, "tcp6://[::1]:0", "udp6://[::1]:0")
		want = append(want, "tcp", "udp")
	}
	for i, in := range specs {
		spec, err := ParseSpec(in, i)
		if err != nil {
			t.Fatal(err)
		}
		s, err := bind(spec)
		if err != nil {
			t.Fatal(err)
		}
		network, addr, err := describe(s.fd)
		if err != nil {
			t.Errorf("describe(%s): %v", in, err)
		} else if network != want[i] || addr.String() != s.Addr.String() {
			t.Errorf("describe(%s) = %s %v, want %s %v", in, network, addr, want[i], s.Addr)
		}
		// An inherited socket with this address is found by its spec.
		if network != "" && !sameAddress(&Socket{Spec: Spec{Network: network, Address: addr.String()}}, Spec{Network: spec.Network, Address: s.Addr.String()}) {
			t.Errorf("sameAddress does not match %s with its own address %v", in, addr)
		}
		s.close()
	}

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, _, err := describe(int(r.Fd())); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("describe(pipe): %v, want not a socket", err)
	}
}

func TestExplainBindError(t *testing.T) {
	tcp := Spec{Name: "web", Network: "tcp", Address: "127.0.0.1:80"}
	sock := Spec{Name: "s", Network: "unix", Address: "/run/x/app.sock"}
	wrap := func(errno syscall.Errno) error {
		return &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", errno)}
	}
	tests := []struct {
		spec Spec
		err  error
		want string
	}{
		{tcp, wrap(syscall.EADDRINUSE), "address already in use: is another supervisor or server running on 127.0.0.1:80?"},
		{tcp, wrap(syscall.EACCES), "ports below 1024 need root or CAP_NET_BIND_SERVICE"},
		{sock, wrap(syscall.EACCES), "cannot create /run/x/app.sock"},
		{tcp, wrap(syscall.EADDRNOTAVAIL), "127.0.0.1:80 is not an address of this host"},
		{sock, wrap(syscall.ENOENT), "the directory of /run/x/app.sock does not exist"},
		{tcp, wrap(syscall.EINVAL), "invalid argument"},
	}
	for _, tt := range tests {
		err := explainBindError(tt.spec, tt.err)
		if !strings.HasPrefix(err.Error(), "listener: "+tt.spec.String()+": ") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("explainBindError(%s, %v) = %q, want it to say %q", tt.spec, tt.err, err, tt.want)
		}
	}
}

// A unixpacket spec must not adopt a unix stream socket at the same path (or
// by name): both are "not packet", but the worker would get a stream socket
// where it asked for SOCK_SEQPACKET.
func TestSameAddressSocketType(t *testing.T) {
	spec, err := ParseSpec("unixpacket:///run/a.sock", 0)
	if err != nil {
		t.Fatal(err)
	}
	if sameAddress(&Socket{Spec: Spec{Network: "unix", Address: "/run/a.sock"}}, spec) {
		t.Error("a unixpacket spec matches an inherited unix stream socket")
	}
}
