package listener_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/procswitch/supervisor/listener"
	"golang.org/x/sys/unix"
)

// ioTimeout bounds every wait for a connection or a datagram on loopback.
const ioTimeout = 10 * time.Second

func parseSpecs(t *testing.T, in ...string) []listener.Spec {
	t.Helper()
	specs := make([]listener.Spec, len(in))
	for i, s := range in {
		spec, err := listener.ParseSpec(s, i)
		if err != nil {
			t.Fatal(err)
		}
		specs[i] = spec
	}
	return specs
}

// open opens specs and closes the set when the test ends.
func open(t *testing.T, in ...string) *listener.Set {
	t.Helper()
	set, err := listener.Open(parseSpecs(t, in...))
	if err != nil {
		t.Fatalf("Open(%q): %v", in, err)
	}
	t.Cleanup(func() { set.Close() })
	return set
}

// waitReadable waits, bounded, until fd has something to read or accept.
func waitReadable(t *testing.T, fd int) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(time.Until(deadline).Milliseconds()))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatalf("poll fd %d: %v", fd, err)
		}
		if n == 0 {
			t.Fatalf("fd %d: nothing arrived within %v", fd, ioTimeout)
		}
		return
	}
}

// acceptOn accepts one connection directly on the socket's fd, which proves
// that the fd is the listening socket the client reached.
func acceptOn(t *testing.T, fd int) {
	t.Helper()
	waitReadable(t, fd)
	nfd, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatalf("accept on fd %d: %v", fd, err)
	}
	unix.Close(nfd)
}

// recvOn reads one datagram directly from the socket's fd.
func recvOn(t *testing.T, fd int) string {
	t.Helper()
	waitReadable(t, fd)
	buf := make([]byte, 64)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		t.Fatalf("recvfrom fd %d: %v", fd, err)
	}
	return string(buf[:n])
}

// exercise checks that a client reaches the socket through its address and
// that the socket's fd is what it reached.
func exercise(t *testing.T, s *listener.Socket) {
	t.Helper()
	network := s.Network
	c, err := net.DialTimeout(network, s.Addr.String(), ioTimeout)
	if err != nil {
		t.Fatalf("dial %s %s: %v", network, s.Addr, err)
	}
	defer c.Close()
	if s.IsPacket() {
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		if got := recvOn(t, s.FD()); got != "ping" {
			t.Errorf("%s: got datagram %q, want ping", s.Name, got)
		}
		return
	}
	acceptOn(t, s.FD())
}

func TestOpenTCP(t *testing.T) {
	set := open(t, "tcp://127.0.0.1:0", "web=tcp4://127.0.0.1:0")
	if got, want := set.Names(), "listen0:web"; got != want {
		t.Errorf("Names() = %q, want %q", got, want)
	}
	for _, s := range set.Sockets {
		addr, ok := s.Addr.(*net.TCPAddr)
		if !ok || addr.Port == 0 || !addr.IP.Equal(net.IPv4(127, 0, 0, 1)) {
			t.Errorf("%s: Addr = %v, want 127.0.0.1 with the port the kernel chose", s.Name, s.Addr)
		}
		if s.Inherited {
			t.Errorf("%s: Inherited, but it was bound here", s.Name)
		}
		if s.Address != "127.0.0.1:0" {
			t.Errorf("%s: Address = %q, want the spec's 127.0.0.1:0", s.Name, s.Address)
		}
		exercise(t, s)
	}
}

func TestOpenTCP6(t *testing.T) {
	probe, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	probe.Close()
	set := open(t, "tcp://[::1]:0", "v6=tcp6://[::1]:0", "udp6://[::1]:0")
	for _, s := range set.Sockets {
		if ip := addrIP(s.Addr); !ip.Equal(net.IPv6loopback) {
			t.Errorf("%s: Addr = %v, want [::1]", s.Name, s.Addr)
		}
		exercise(t, s)
	}
}

func addrIP(a net.Addr) net.IP {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP
	case *net.UDPAddr:
		return a.IP
	}
	return nil
}

func TestOpenUDP(t *testing.T) {
	set := open(t, "dns=udp://127.0.0.1:0", "udp4://127.0.0.1:0")
	for _, s := range set.Sockets {
		if a, ok := s.Addr.(*net.UDPAddr); !ok || a.Port == 0 {
			t.Errorf("%s: Addr = %#v, want a *net.UDPAddr with a port", s.Name, s.Addr)
		}
		exercise(t, s)
	}
}

func TestOpenUnix(t *testing.T) {
	dir := t.TempDir()
	for _, network := range []string{"unix", "unixpacket", "unixgram"} {
		t.Run(network, func(t *testing.T) {
			path := filepath.Join(dir, network+".sock")
			set := open(t, network+"://"+path)
			s := set.Sockets[0]
			if s.Network != network || s.Address != path || s.Addr.String() != path {
				t.Errorf("socket = %s, Addr %v; want %s://%s", s.Spec, s.Addr, network, path)
			}
			fi, err := os.Lstat(path)
			if err != nil || fi.Mode()&os.ModeSocket == 0 {
				t.Fatalf("%s: no socket file: %v, %v", path, fi, err)
			}
			exercise(t, s)
		})
	}
}

func TestOpenUnixAbstract(t *testing.T) {
	name := fmt.Sprintf("@procswitch-listener-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	set, err := listener.Open(parseSpecs(t, "unix://"+name))
	if err != nil {
		t.Fatal(err)
	}
	exercise(t, set.Sockets[0])
	if err := set.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("unix", name); err == nil {
		t.Errorf("abstract socket %s still answers after Close", name)
	}
}

func TestOpenUnixStaleFileRemoved(t *testing.T) {
	for _, network := range []string{"unix", "unixpacket", "unixgram"} {
		t.Run(network, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "app.sock")
			leaveStaleSocket(t, network, path)
			set := open(t, network+"://"+path)
			exercise(t, set.Sockets[0])
		})
	}
}

// leaveStaleSocket leaves a socket file behind, as a process that died does.
func leaveStaleSocket(t *testing.T, network, path string) {
	t.Helper()
	typ := map[string]int{"unix": unix.SOCK_STREAM, "unixpacket": unix.SOCK_SEQPACKET, "unixgram": unix.SOCK_DGRAM}[network]
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if typ != unix.SOCK_DGRAM {
		if err := unix.Listen(fd, 1); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenUnixLiveRefused(t *testing.T) {
	for _, network := range []string{"unix", "unixpacket"} {
		t.Run(network, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "app.sock")
			live, err := net.Listen(network, path)
			if err != nil {
				t.Fatal(err)
			}
			defer live.Close()
			_, err = listener.Open(parseSpecs(t, network+"://"+path))
			if err == nil {
				t.Fatal("Open took over a socket another process listens on")
			}
			if !strings.Contains(err.Error(), "already in use") || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q should say the address is already in use and name %s", err, path)
			}
			// The other process's socket is untouched and still reachable.
			c, err := net.DialTimeout(network, path, ioTimeout)
			if err != nil {
				t.Fatalf("the live socket no longer answers: %v", err)
			}
			c.Close()
		})
	}
}

// A datagram socket can be probed too: connect(2) to a bound unixgram socket
// succeeds and to a stale one fails with ECONNREFUSED.
func TestOpenUnixgramLiveRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.sock")
	live, err := net.ListenPacket("unixgram", path)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	set, err := listener.Open(parseSpecs(t, "unixgram://"+path))
	if err == nil {
		set.Close()
		t.Fatal("Open took over a datagram socket another process is bound to")
	}
	if !strings.Contains(err.Error(), "already in use") {
		t.Errorf("error %q should say the address is already in use", err)
	}
}

func TestOpenUnixNotSocketRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	if err := os.WriteFile(path, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := listener.Open(parseSpecs(t, "unix://"+path))
	if err == nil || !strings.Contains(err.Error(), "not a socket") || !strings.Contains(err.Error(), path) {
		t.Errorf("Open over a regular file: %v; want an error saying %s is not a socket", err, path)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "precious" {
		t.Errorf("the regular file was touched: %q, %v", b, err)
	}
}

func TestOpenUnixMissingDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no", "such", "dir", "app.sock")
	_, err := listener.Open(parseSpecs(t, "unix://"+path))
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Open in a missing directory: %v; want an error saying it does not exist", err)
	}
}

func TestOpenAddressInUse(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	for _, addr := range []string{"tcp://" + tcp.Addr().String(), "udp://" + udp.LocalAddr().String()} {
		t.Run(addr, func(t *testing.T) {
			set, err := listener.Open(parseSpecs(t, addr))
			if err == nil {
				set.Close()
				t.Fatalf("Open(%s) succeeded on an address in use", addr)
			}
			_, hostport, _ := strings.Cut(addr, "://")
			if !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), hostport) {
				t.Errorf("error %q should say %q and name %s", err, "address already in use", hostport)
			}
		})
	}
}

func TestOpenDuplicateNames(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "dup.sock")
	tests := [][]string{
		{"a=tcp://127.0.0.1:0", "a=unix://" + sock},
		// An explicit name may collide with a default one.
		{"listen1=unix://" + sock, "tcp://127.0.0.1:0"},
	}
	for _, in := range tests {
		set, err := listener.Open(parseSpecs(t, in...))
		if err == nil {
			set.Close()
			t.Fatalf("Open(%q) accepted two sockets with one name", in)
		}
		if !strings.Contains(err.Error(), "two sockets are named") {
			t.Errorf("Open(%q): %v; want a duplicate-name error", in, err)
		}
		// What was opened before the refusal is closed again.
		if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Open(%q) failed but left %s behind: %v", in, sock, err)
		}
	}
}

// A failing spec closes the sockets opened for the specs before it.
func TestOpenFailureReleasesEarlierSockets(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	path := filepath.Join(t.TempDir(), "first.sock")
	probe, err := net.Listen("tcp", "127.0.0.1:0") // find a free port
	if err != nil {
		t.Fatal(err)
	}
	free := probe.Addr().String()
	probe.Close()
	_, err = listener.Open(parseSpecs(t, "unix://"+path, "tcp://"+free, "tcp://"+busy.Addr().String()))
	if err == nil {
		t.Fatal("Open succeeded although the last address is in use")
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left behind after a failed Open: %v", path, err)
	}
	again, err := net.Listen("tcp", free)
	if err != nil {
		t.Fatalf("%s still held after a failed Open: %v", free, err)
	}
	again.Close()
}

func TestOpenNothing(t *testing.T) {
	_, err := listener.Open(nil)
	if err == nil || !strings.Contains(err.Error(), "no sockets") {
		t.Errorf("Open(nil) without systemd: %v; want a no-sockets error", err)
	}
}

// FDs are close-on-exec duplicates (a worker gets them only through its
// explicit fd list), and neither Open nor FDs switch the socket's blocking
// mode: net.Listen made it non-blocking and so it stays.
func TestFDsCloexecAndBlockingModeKept(t *testing.T) {
	dir := t.TempDir()
	set := open(t, "tcp://127.0.0.1:0", "udp://127.0.0.1:0",
		"unix://"+filepath.Join(dir, "s.sock"), "unixgram://"+filepath.Join(dir, "g.sock"),
		"unixpacket://"+filepath.Join(dir, "p.sock"))
	before := make([]int, len(set.Sockets))
	for i, s := range set.Sockets {
		before[i] = getfl(t, s.FD())
		if before[i]&unix.O_NONBLOCK != 0 {
			t.Errorf("%s: fd %d is non-blocking after Open; systemd passes blocking sockets (NonBlocking=no), and programs written for it expect them", s.Name, s.FD())
		}
	}
	fds := set.FDs()
	if len(fds) != len(set.Sockets) {
		t.Fatalf("FDs() = %v for %d sockets", fds, len(set.Sockets))
	}
	for i, fd := range fds {
		s := set.Sockets[i]
		if fd != s.FD() {
			t.Errorf("FDs()[%d] = %d, want %s's fd %d", i, fd, s.Name, s.FD())
		}
		if fd <= 2 {
			t.Errorf("FDs()[%d] = %d is a stdio fd", i, fd)
		}
		fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || fl&unix.FD_CLOEXEC == 0 {
			t.Errorf("%s: fd %d not close-on-exec (flags %#x, %v)", s.Name, fd, fl, err)
		}
		if _, err := s.Inode(); err != nil {
			t.Error(err)
		}
		if after := getfl(t, fd); after != before[i] {
			t.Errorf("%s: file status flags %#x before FDs, %#x after", s.Name, before[i], after)
		}
	}
}

func getfl(t *testing.T, fd int) int {
	t.Helper()
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		t.Fatalf("F_GETFL fd %d: %v", fd, err)
	}
	return fl
}

func TestInode(t *testing.T) {
	set := open(t, "tcp://127.0.0.1:0")
	s := set.Sockets[0]
	ino, err := s.Inode()
	if err != nil {
		t.Fatal(err)
	}
	link, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(s.FD()))
	if err != nil {
		t.Fatal(err)
	}
	if want := "socket:[" + strconv.FormatUint(ino, 10) + "]"; link != want {
		t.Errorf("Inode() = %d, but fd %d is %s", ino, s.FD(), link)
	}
}

func TestCloseRemovesUnixFilesAndReleasesPorts(t *testing.T) {
	dir := t.TempDir()
	stream, gram := filepath.Join(dir, "s.sock"), filepath.Join(dir, "g.sock")
	set, err := listener.Open(parseSpecs(t, "unix://"+stream, "unixgram://"+gram, "tcp://127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	port := set.Sockets[2].Addr.String()
	if err := set.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, p := range []string{stream, gram} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after Close: %v", p, err)
		}
	}
	ln, err := net.Listen("tcp", port)
	if err != nil {
		t.Fatalf("%s still held after Close: %v", port, err)
	}
	ln.Close()
}

// Close removes only socket files: what replaced the socket meanwhile is not
// the supervisor's to delete.
func TestCloseLeavesReplacedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	set, err := listener.Open(parseSpecs(t, "unix://"+path))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("not ours"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := set.Close(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "not ours" {
		t.Errorf("Close removed or changed a regular file: %q, %v", b, err)
	}
}
