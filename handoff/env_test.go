package handoff

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/internal/contract"
	"golang.org/x/sys/unix"
)

// In-process tests place sockets at testFDBase, testFDBase+1, ... and call
// newWorker(testFDBase): fds 3, 4, ... belong to the test's runtime. One
// test (TestNewInChild) runs the real fd 3 path in a child process.
const testFDBase = 500

// contractVars are the variables New must unset.
var contractVars = []string{contract.EnvListenFDs, contract.EnvListenFDNames, contract.EnvListenPID,
	contract.EnvNotifySocket, contract.EnvWatchdogUSec, contract.EnvWatchdogPID}

// testSockets are a TCP listener, a UDP socket and a Unix listener on
// loopback or in a temporary directory.
type testSockets struct {
	tcp  *net.TCPListener
	udp  *net.UDPConn
	unix *net.UnixListener
	path string
}

func newTestSockets(t *testing.T) *testSockets {
	t.Helper()
	s := &testSockets{path: filepath.Join(shortTempDir(t), "admin.sock")}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ul, err := net.Listen("unix", s.path)
	if err != nil {
		t.Fatal(err)
	}
	s.tcp, s.udp, s.unix = tcp.(*net.TCPListener), udp.(*net.UDPConn), ul.(*net.UnixListener)
	t.Cleanup(func() { tcp.Close(); udp.Close(); ul.Close() })
	return s
}

func (s *testSockets) conns() []syscall.Conn { return []syscall.Conn{s.tcp, s.udp, s.unix} }

// placeSockets dups the first n test sockets to testFDBase onwards, without
// close-on-exec (New must set it).
func placeSockets(t *testing.T, s *testSockets, n int) {
	t.Helper()
	for i := range 4 {
		if _, err := unix.FcntlInt(uintptr(testFDBase+i), unix.F_GETFD, 0); err == nil {
			t.Fatalf("fd %d is already open", testFDBase+i)
		}
	}
	// Registered first, so it runs after the cleanups that close the
	// worker's wrappers of these fds.
	t.Cleanup(func() {
		for i := range 4 {
			unix.Close(testFDBase + i)
		}
	})
	for i, c := range s.conns()[:n] {
		rc, err := c.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var dupErr error
		if err := rc.Control(func(fd uintptr) { dupErr = unix.Dup3(int(fd), testFDBase+i, 0) }); err != nil {
			t.Fatal(err)
		}
		if dupErr != nil {
			t.Fatal(dupErr)
		}
	}
}

// clearContractEnv unsets every variable of the contract for the test.
func clearContractEnv(t *testing.T) {
	for _, k := range append(contractVars, contract.EnvDrainSignal, contract.EnvReloadSignal, contract.EnvGeneration) {
		t.Setenv(k, "") // restores the old value at cleanup
		os.Unsetenv(k)
	}
}

func TestNewEnv(t *testing.T) {
	pid := strconv.Itoa(os.Getpid())
	other := strconv.Itoa(os.Getpid() + 1)
	tests := []struct {
		name     string
		env      map[string]string
		socks    int      // test sockets placed at testFDBase
		wantErr  string   // a part of the error; "" for none
		names    []string // want Names()
		watchdog time.Duration
		gen      int
		superv   bool
	}{
		{name: "nothing"},
		{name: "named", socks: 2, names: []string{"web", "dns"}, superv: true,
			env: map[string]string{contract.EnvListenPID: pid, contract.EnvListenFDs: "2", contract.EnvListenFDNames: "web:dns"}},
		{name: "unnamed", socks: 2, names: []string{"unknown", "unknown"}, superv: true,
			env: map[string]string{contract.EnvListenPID: pid, contract.EnvListenFDs: "2"}},
		{name: "zero fds", env: map[string]string{contract.EnvListenPID: pid, contract.EnvListenFDs: "0"}},
		{name: "pid of another process", socks: 2,
			env: map[string]string{contract.EnvListenPID: other, contract.EnvListenFDs: "2", contract.EnvListenFDNames: "web:dns"}},
		{name: "no pid", socks: 2, env: map[string]string{contract.EnvListenFDs: "2"}},
		{name: "malformed pid", wantErr: "LISTEN_PID=\"12x\"",
			env: map[string]string{contract.EnvListenPID: "12x", contract.EnvListenFDs: "1"}},
		{name: "malformed count", wantErr: "LISTEN_FDS=\"two\"",
			env: map[string]string{contract.EnvListenPID: pid, contract.EnvListenFDs: "two"}},
		{name: "negative count", wantErr: "LISTEN_FDS=\"-1\"",
			env: map[string]string{contract.EnvListenPID: pid, contract.EnvListenFDs: "-1"}},
		{name: "names short", socks: 2, wantErr: "1 names for LISTEN_FDS=2",
			env: map[string]string{contract.EnvListenPID: pid, contract.EnvListenFDs: "2", contract.EnvListenFDNames: "web"}},
		{name: "fd not open", socks: 2, wantErr: "fd 502 is not usable",
			env: map[string]string{contract.EnvListenPID: pid, contract.EnvListenFDs: "3"}},
		{name: "notify path", superv: true, env: map[string]string{contract.EnvNotifySocket: "/run/x/notify"}},
		{name: "notify abstract", superv: true, env: map[string]string{contract.EnvNotifySocket: "@x/notify"}},
		{name: "notify relative", wantErr: "want an absolute path",
			env: map[string]string{contract.EnvNotifySocket: "run/notify"}},
		{name: "watchdog", watchdog: 1500 * time.Millisecond,
			env: map[string]string{contract.EnvWatchdogUSec: "1500000"}},
		{name: "watchdog for us", watchdog: time.Second,
			env: map[string]string{contract.EnvWatchdogUSec: "1000000", contract.EnvWatchdogPID: pid}},
		{name: "watchdog for another", env: map[string]string{contract.EnvWatchdogUSec: "1000000", contract.EnvWatchdogPID: other}},
		{name: "watchdog malformed", wantErr: "WATCHDOG_USEC=\"1s\"", env: map[string]string{contract.EnvWatchdogUSec: "1s"}},
		{name: "drain signal", env: map[string]string{contract.EnvDrainSignal: "SIGUSR2"}},
		{name: "drain signal short", env: map[string]string{contract.EnvDrainSignal: "usr2"}},
		{name: "drain signal number", env: map[string]string{contract.EnvDrainSignal: "12"}},
		{name: "drain signal unknown", wantErr: "unknown signal", env: map[string]string{contract.EnvDrainSignal: "SIGNOPE"}},
		{name: "drain signal kill", wantErr: "cannot be caught", env: map[string]string{contract.EnvDrainSignal: "KILL"}},
		{name: "generation", gen: 3, env: map[string]string{contract.EnvGeneration: "3"}},
		{name: "generation malformed", wantErr: "SUPERVISOR_GENERATION", env: map[string]string{contract.EnvGeneration: "third"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearContractEnv(t)
			if tt.socks > 0 {
				placeSockets(t, newTestSockets(t), tt.socks)
			}
			for k, v := range tt.env {
				os.Setenv(k, v) // clearContractEnv registered the restore
			}
			w, err := newWorker(testFDBase)
			for _, k := range contractVars {
				if v, ok := os.LookupEnv(k); ok {
					t.Errorf("%s=%q still set after New", k, v)
				}
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New: error %v, want one containing %q", err, tt.wantErr)
				}
				if !strings.HasPrefix(err.Error(), "handoff: ") {
					t.Errorf("error %q lacks the package prefix", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			t.Cleanup(func() { w.Close() })
			if got := w.Names(); fmt.Sprint(got) != fmt.Sprint(tt.names) {
				t.Errorf("Names() = %q, want %q", got, tt.names)
			}
			if got := w.WatchdogInterval(); got != tt.watchdog {
				t.Errorf("WatchdogInterval() = %v, want %v", got, tt.watchdog)
			}
			if got := w.Generation(); got != tt.gen {
				t.Errorf("Generation() = %d, want %d", got, tt.gen)
			}
			if got := w.Supervised(); got != tt.superv {
				t.Errorf("Supervised() = %v, want %v", got, tt.superv)
			}
			for i := range tt.names {
				flags, err := unix.FcntlInt(uintptr(testFDBase+i), unix.F_GETFD, 0)
				if err != nil || flags&unix.FD_CLOEXEC == 0 {
					t.Errorf("fd %d: flags %#x, %v: want close-on-exec", testFDBase+i, flags, err)
				}
			}
		})
	}
}

func TestSocketsByName(t *testing.T) {
	clearContractEnv(t)
	s := newTestSockets(t)
	placeSockets(t, s, 3)
	t.Setenv(contract.EnvListenPID, strconv.Itoa(os.Getpid()))
	t.Setenv(contract.EnvListenFDs, "3")
	t.Setenv(contract.EnvListenFDNames, "web:dns:admin")
	w, err := newWorker(testFDBase)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })

	web, err := w.Listener("web")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { web.Close() })
	if again, err := w.Listener("web"); err != nil || again != web {
		t.Errorf("Listener(web) again = %v, %v; want the same listener", again, err)
	}
	if web.Addr().String() != s.tcp.Addr().String() {
		t.Errorf("web listens on %v, want %v", web.Addr(), s.tcp.Addr())
	}
	acceptOne(t, web, "tcp", s.tcp.Addr().String())

	if _, err := w.PacketConn("web"); err == nil || !strings.Contains(err.Error(), "already taken as a listener") {
		t.Errorf("PacketConn(web) after Listener(web): %v, want already taken", err)
	}
	if _, err := w.Listener("dns"); err == nil || !strings.Contains(err.Error(), "not a listening socket") {
		t.Errorf("Listener(dns): %v, want not a listening socket", err)
	}
	dns, err := w.PacketConn("dns")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dns.Close() })
	if dns.LocalAddr().String() != s.udp.LocalAddr().String() {
		t.Errorf("dns bound to %v, want %v", dns.LocalAddr(), s.udp.LocalAddr())
	}
	if _, err := w.Listener("nope"); !errors.Is(err, ErrNoSocket) || !strings.Contains(err.Error(), `"web", "dns", "admin"`) {
		t.Errorf("Listener(nope): %v, want ErrNoSocket listing the names", err)
	}
	if _, err := w.Listen("nope", "tcp", "127.0.0.1:0"); !errors.Is(err, ErrNoSocket) {
		t.Errorf("Listen(nope) with three passed: %v, want ErrNoSocket", err)
	}

	admin, err := w.Listener("admin")
	if err != nil {
		t.Fatal(err)
	}
	acceptOne(t, admin, "unix", s.path)
	if err := admin.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.path); err != nil {
		t.Errorf("closing the passed Unix listener removed its path: %v", err)
	}
}

func TestListenFallback(t *testing.T) {
	t.Run("nothing passed binds", func(t *testing.T) {
		clearContractEnv(t)
		w, err := newWorker(testFDBase)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		ln, err := w.Listen("http", "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		acceptOne(t, ln, "tcp", ln.Addr().String())
	})
	t.Run("single passed is used", func(t *testing.T) {
		clearContractEnv(t)
		s := newTestSockets(t)
		placeSockets(t, s, 1)
		t.Setenv(contract.EnvListenPID, strconv.Itoa(os.Getpid()))
		t.Setenv(contract.EnvListenFDs, "1")
		w, err := newWorker(testFDBase)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		ln, err := w.Listen("http", "tcp", "127.0.0.1:1") // port 1: would fail if bound
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		if ln.Addr().String() != s.tcp.Addr().String() {
			t.Errorf("Listen returned %v, want the passed %v", ln.Addr(), s.tcp.Addr())
		}
		if _, err := w.Listen("debug", "tcp", "127.0.0.1:0"); !errors.Is(err, ErrNoSocket) {
			t.Errorf("second name once the single socket is taken: %v, want ErrNoSocket", err)
		}
	})
}

// acceptOne dials addr and checks that ln accepts the connection.
func acceptOne(t *testing.T, ln net.Listener, network, addr string) {
	t.Helper()
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case err := <-accepted:
		if err != nil {
			t.Fatalf("accept on %s: %v", addr, err)
		}
	case <-time.After(10 * time.Second):
		ln.Close()
		t.Fatalf("no accept on %s within 10s", addr)
	}
}

// report is what the "report" helper saw, as JSON on its stdout.
type report struct {
	Names      []string
	CloseExec  []bool
	Left       []string // contract variables still set after New
	Web, DNS   string   // the addresses of the listener and packet conn
	Supervised bool
	Generation int
}

func helperReport() error {
	w, err := New()
	if err != nil {
		return err
	}
	r := report{Names: w.Names(), Supervised: w.Supervised(), Generation: w.Generation()}
	for i := range r.Names {
		flags, err := unix.FcntlInt(uintptr(contract.ListenFDsStart+i), unix.F_GETFD, 0)
		r.CloseExec = append(r.CloseExec, err == nil && flags&unix.FD_CLOEXEC != 0)
	}
	for _, k := range contractVars {
		if _, ok := os.LookupEnv(k); ok {
			r.Left = append(r.Left, k)
		}
	}
	web, err := w.Listener("web")
	if err != nil {
		return err
	}
	dns, err := w.PacketConn("dns")
	if err != nil {
		return err
	}
	r.Web, r.DNS = web.Addr().String(), dns.LocalAddr().String()
	// The parent connected before this process existed: the connection
	// waited in the kernel's queue of the shared socket.
	c, err := web.Accept()
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(c, "hello from %d\n", os.Getpid()); err != nil {
		return err
	}
	c.Close()
	return json.NewEncoder(os.Stdout).Encode(r)
}

// TestNewInChild runs New on real fds 3, 4, ... in a process started the way
// the supervisor starts workers.
func TestNewInChild(t *testing.T) {
	s := newTestSockets(t)
	conn, err := net.DialTimeout("tcp", s.tcp.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	files := []*os.File{socketFile(t, s.tcp), socketFile(t, s.udp)}
	c := startChild(t, "report", files, []string{"web", "dns"}, contract.EnvGeneration+"=7")
	if err := c.wait(t, exitTimeout); err != nil {
		t.Fatalf("report helper: %v; stderr:\n%s", err, c.stderr.String())
	}
	var r report
	if err := json.Unmarshal(c.stdout.Bytes(), &r); err != nil {
		t.Fatalf("report: %v: %q", err, c.stdout.String())
	}
	if fmt.Sprint(r.Names) != "[web dns]" || fmt.Sprint(r.CloseExec) != "[true true]" {
		t.Errorf("names %q, close-on-exec %v; want [web dns], [true true]", r.Names, r.CloseExec)
	}
	if len(r.Left) > 0 {
		t.Errorf("still set in the worker after New: %v", r.Left)
	}
	if r.Web != s.tcp.Addr().String() || r.DNS != s.udp.LocalAddr().String() {
		t.Errorf("worker got %s and %s, want %s and %s", r.Web, r.DNS, s.tcp.Addr(), s.udp.LocalAddr())
	}
	if !r.Supervised || r.Generation != 7 {
		t.Errorf("Supervised %v, Generation %d; want true, 7", r.Supervised, r.Generation)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if want := fmt.Sprintf("hello from %d\n", c.cmd.Process.Pid); err != nil || string(buf[:n]) != want {
		t.Errorf("queued connection got %q, %v; want %q", buf[:n], err, want)
	}
}
