package listener_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/procswitch/supervisor/listener"
)

func TestParseSpec(t *testing.T) {
	tests := []struct {
		in   string
		i    int
		want listener.Spec
	}{
		{"tcp://127.0.0.1:8080", 0, listener.Spec{Name: "listen0", Network: "tcp", Address: "127.0.0.1:8080"}},
		{"tcp://:8080", 3, listener.Spec{Name: "listen3", Network: "tcp", Address: ":8080"}},
		{"tcp://localhost:0", 1, listener.Spec{Name: "listen1", Network: "tcp", Address: "localhost:0"}},
		{"web=tcp://127.0.0.1:80", 7, listener.Spec{Name: "web", Network: "tcp", Address: "127.0.0.1:80"}},
		{"tcp4://0.0.0.0:65535", 0, listener.Spec{Name: "listen0", Network: "tcp4", Address: "0.0.0.0:65535"}},
		{"tcp6://[::1]:8080", 0, listener.Spec{Name: "listen0", Network: "tcp6", Address: "[::1]:8080"}},
		{"v6=tcp://[::]:0", 0, listener.Spec{Name: "v6", Network: "tcp", Address: "[::]:0"}},
		{"udp://127.0.0.1:53", 0, listener.Spec{Name: "listen0", Network: "udp", Address: "127.0.0.1:53"}},
		{"udp4://127.0.0.1:53", 0, listener.Spec{Name: "listen0", Network: "udp4", Address: "127.0.0.1:53"}},
		{"dns=udp6://[::1]:53", 0, listener.Spec{Name: "dns", Network: "udp6", Address: "[::1]:53"}},
		{"unix:///run/app.sock", 2, listener.Spec{Name: "listen2", Network: "unix", Address: "/run/app.sock"}},
		{"unixgram:///run/log.sock", 0, listener.Spec{Name: "listen0", Network: "unixgram", Address: "/run/log.sock"}},
		{"unixpacket:///run/p.sock", 0, listener.Spec{Name: "listen0", Network: "unixpacket", Address: "/run/p.sock"}},
		{"unix://@abstract", 0, listener.Spec{Name: "listen0", Network: "unix", Address: "@abstract"}},
		// '=' after "://" belongs to the path, not to a name.
		{"unix:///tmp/a=b.sock", 0, listener.Spec{Name: "listen0", Network: "unix", Address: "/tmp/a=b.sock"}},
		{"x=unix:///tmp/a=b.sock", 0, listener.Spec{Name: "x", Network: "unix", Address: "/tmp/a=b.sock"}},
		// The network is case-insensitive.
		{"TCP://127.0.0.1:1", 0, listener.Spec{Name: "listen0", Network: "tcp", Address: "127.0.0.1:1"}},
		// Every printable ASCII character but ':' may name a socket.
		{"a-b_c.d~!#=tcp://127.0.0.1:1", 0, listener.Spec{Name: "a-b_c.d~!#", Network: "tcp", Address: "127.0.0.1:1"}},
		{strings.Repeat("n", 255) + "=tcp://127.0.0.1:1", 0, listener.Spec{Name: strings.Repeat("n", 255), Network: "tcp", Address: "127.0.0.1:1"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := listener.ParseSpec(tt.in, tt.i)
			if err != nil {
				t.Fatalf("ParseSpec(%q, %d): %v", tt.in, tt.i, err)
			}
			if got != tt.want {
				t.Errorf("ParseSpec(%q, %d) = %+v, want %+v", tt.in, tt.i, got, tt.want)
			}
			// String gives back a spec that parses to the same thing.
			again, err := listener.ParseSpec(got.String(), 99)
			if err != nil || again != got {
				t.Errorf("ParseSpec(%q) = %+v, %v; want %+v", got.String(), again, err, got)
			}
		})
	}
}

func TestParseSpecErrors(t *testing.T) {
	tests := []struct {
		in   string
		want string // in the error
	}{
		{"", "want [NAME=]NETWORK://ADDRESS"},
		{"127.0.0.1:8080", "want [NAME=]NETWORK://ADDRESS"},
		{"web=127.0.0.1:8080", "want [NAME=]NETWORK://ADDRESS"},
		{"tcp:/127.0.0.1:8080", "want [NAME=]NETWORK://ADDRESS"},
		{"sctp://127.0.0.1:8080", `unknown network "sctp"`},
		{"ip://127.0.0.1:8080", `unknown network "ip"`},
		{"://127.0.0.1:8080", `unknown network ""`},
		{"tcp://127.0.0.1", "want HOST:PORT"},
		{"tcp://", "want HOST:PORT"},
		{"tcp://::1:8080", "want HOST:PORT"},
		{"tcp://127.0.0.1:http", `port "http"`},
		{"tcp://127.0.0.1:65536", `port "65536"`},
		{"tcp://127.0.0.1:-1", `port "-1"`},
		{"tcp://127.0.0.1:", `port ""`},
		{"udp://example.com:53", `host "example.com"`},
		{"tcp://300.1.1.1:80", `host "300.1.1.1"`},
		{"unix://", "empty socket path"},
		{"unix://run/app.sock", "not absolute"},
		{"unixgram://./app.sock", "not absolute"},
		{"unixpacket://app.sock", "not absolute"},
		{"=tcp://127.0.0.1:1", "empty name"},
		{"a:b=tcp://127.0.0.1:1", "without ':'"},
		{"a b=tcp://127.0.0.1:1", "without ':' or spaces"},
		{"a\tb=tcp://127.0.0.1:1", "printable ASCII"},
		{"né=tcp://127.0.0.1:1", "printable ASCII"},
		{"a\x7f=tcp://127.0.0.1:1", "printable ASCII"},
		{strings.Repeat("n", 256) + "=tcp://127.0.0.1:1", "longer than 255"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := listener.ParseSpec(tt.in, 0)
			if err == nil {
				t.Fatalf("ParseSpec(%q) = %+v, want an error", tt.in, got)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseSpec(%q): %q does not say %q", tt.in, err, tt.want)
			}
			if !strings.Contains(err.Error(), strconv.Quote(tt.in)) {
				t.Errorf("ParseSpec(%q): %q does not quote the input", tt.in, err)
			}
			if got != (listener.Spec{}) {
				t.Errorf("ParseSpec(%q) returned %+v with its error, want the zero Spec", tt.in, got)
			}
		})
	}
}

func TestSpecKinds(t *testing.T) {
	tests := []struct {
		network      string
		unix, packet bool
	}{
		{"tcp", false, false},
		{"tcp4", false, false},
		{"tcp6", false, false},
		{"udp", false, true},
		{"udp4", false, true},
		{"udp6", false, true},
		{"unix", true, false},
		{"unixgram", true, true},
		{"unixpacket", true, false},
	}
	for _, tt := range tests {
		s := listener.Spec{Network: tt.network}
		if s.IsUnix() != tt.unix || s.IsPacket() != tt.packet {
			t.Errorf("%s: IsUnix %v, IsPacket %v; want %v, %v", tt.network, s.IsUnix(), s.IsPacket(), tt.unix, tt.packet)
		}
	}
}

func TestDefaultName(t *testing.T) {
	for i, want := range []string{"listen0", "listen1", "listen2"} {
		if got := listener.DefaultName(i); got != want {
			t.Errorf("DefaultName(%d) = %q, want %q", i, got, want)
		}
	}
	if got := listener.DefaultName(12); got != "listen12" {
		t.Errorf("DefaultName(12) = %q", got)
	}
}
