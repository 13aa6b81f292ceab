package listener_test

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/procswitch/supervisor/listener"
	"golang.org/x/sys/unix"
)

// activated is a socket the test passes to a helper as systemd would.
type activated struct {
	addr  string
	inode uint64
	file  *os.File
}

// listenFile opens a listening socket and returns a duplicate of it for
// cmd.ExtraFiles; the original stays open for the test's lifetime.
func listenFile(t *testing.T, network, address string) activated {
	t.Helper()
	var (
		c    syscall.Conn
		addr string
	)
	switch network {
	case "udp", "unixgram":
		pc, err := net.ListenPacket(network, address)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		c, addr = pc.(syscall.Conn), pc.LocalAddr().String()
	default:
		ln, err := net.Listen(network, address)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		c, addr = ln.(syscall.Conn), ln.Addr().String()
	}
	f, err := c.(interface{ File() (*os.File, error) }).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return activated{addr: addr, inode: st.Ino, file: f}
}

func files(as ...activated) []*os.File {
	fs := make([]*os.File, len(as))
	for i, a := range as {
		fs[i] = a.file
	}
	return fs
}

func activation(names string, specs ...string) []string {
	env := []string{envOwnPID + "=1", envSpecs + "=" + strings.Join(specs, "\n")}
	if names != "-" {
		env = append(env, "LISTEN_FDNAMES="+names)
	}
	return env
}

// checkConsumed checks that the LISTEN_* variables are gone, so that no
// grandchild believes the sockets are meant for it.
func checkConsumed(t *testing.T, rep report) {
	t.Helper()
	if len(rep.EnvAfter) != 0 {
		t.Errorf("LISTEN_* variables still set after Open: %q", rep.EnvAfter)
	}
}

func checkAdopted(t *testing.T, got sockReport, name string, fd int, from activated) {
	t.Helper()
	if got.Name != name || !got.Inherited || got.FD != fd || got.Inode != from.inode || got.Address != from.addr {
		t.Errorf("socket %+v; want %q inherited as fd %d, inode %d, address %s", got, name, fd, from.inode, from.addr)
	}
	if !got.Cloexec {
		t.Errorf("inherited fd %d is not close-on-exec: every worker would receive it twice", got.FD)
	}
}

func TestSystemdAdoptByName(t *testing.T) {
	web := listenFile(t, "tcp", "127.0.0.1:0")
	// The spec's address differs: the name alone decides.
	rep := runSystemd(t, files(web), append(activation("web", "web=tcp://127.0.0.1:0"), "LISTEN_FDS=1")...)
	if rep.Err != "" {
		t.Fatal(rep.Err)
	}
	if len(rep.Sockets) != 1 {
		t.Fatalf("sockets %+v, want the inherited web only", rep.Sockets)
	}
	checkAdopted(t, rep.Sockets[0], "web", 3, web)
	if rep.Sockets[0].Network != "tcp" {
		t.Errorf("network %q, want tcp", rep.Sockets[0].Network)
	}
	checkConsumed(t, rep)
}

func TestSystemdAdoptByAddress(t *testing.T) {
	sys := listenFile(t, "tcp", "127.0.0.1:0")
	gram := filepath.Join(t.TempDir(), "g.sock")
	logs := listenFile(t, "unixgram", gram)
	rep := runSystemd(t, files(sys, logs), append(activation("sysd:syslog",
		"api=tcp://"+sys.addr, "fresh=tcp://127.0.0.1:0", "log=unixgram://"+gram), "LISTEN_FDS=2")...)
	if rep.Err != "" {
		t.Fatal(rep.Err)
	}
	if len(rep.Sockets) != 3 {
		t.Fatalf("sockets %+v, want api, fresh, log", rep.Sockets)
	}
	checkAdopted(t, rep.Sockets[0], "api", 3, sys)
	if s := rep.Sockets[1]; s.Name != "fresh" || s.Inherited || s.FD < 5 {
		t.Errorf("socket %+v: want fresh bound here, not inherited", s)
	}
	checkAdopted(t, rep.Sockets[2], "log", 4, logs)
	if rep.Names != "api:fresh:log" {
		t.Errorf("Names() = %q", rep.Names)
	}
	checkConsumed(t, rep)
}

func TestSystemdAdoptAllWithoutSpecs(t *testing.T) {
	web := listenFile(t, "tcp", "127.0.0.1:0")
	path := filepath.Join(t.TempDir(), "admin.sock")
	admin := listenFile(t, "unix", path)
	dns := listenFile(t, "udp", "127.0.0.1:0")
	rep := runSystemd(t, files(web, admin, dns), append(activation("web:admin:dns"), "LISTEN_FDS=3")...)
	if rep.Err != "" {
		t.Fatal(rep.Err)
	}
	if len(rep.Sockets) != 3 {
		t.Fatalf("sockets %+v, want all three systemd passed", rep.Sockets)
	}
	checkAdopted(t, rep.Sockets[0], "web", 3, web)
	checkAdopted(t, rep.Sockets[1], "admin", 4, admin)
	checkAdopted(t, rep.Sockets[2], "dns", 5, dns)
	for i, network := range []string{"tcp", "unix", "udp"} {
		if rep.Sockets[i].Network != network {
			t.Errorf("socket %d network %q, want %q", i, rep.Sockets[i].Network, network)
		}
	}
	if rep.Names != "web:admin:dns" {
		t.Errorf("Names() = %q", rep.Names)
	}
	checkConsumed(t, rep)
}

// Without LISTEN_FDNAMES, or with an empty entry, a socket is "unknown", as
// sd_listen_fds_with_names reports it.
func TestSystemdUnnamed(t *testing.T) {
	a, b := listenFile(t, "tcp", "127.0.0.1:0"), listenFile(t, "tcp", "127.0.0.1:0")
	for _, names := range []string{"-", ""} {
		rep := runSystemd(t, files(a), append(activation(names), "LISTEN_FDS=1")...)
		if rep.Err != "" {
			t.Fatal(rep.Err)
		}
		if len(rep.Sockets) != 1 || rep.Sockets[0].Name != "unknown" {
			t.Errorf("LISTEN_FDNAMES %q: sockets %+v, want one named unknown", names, rep.Sockets)
		}
	}
	rep := runSystemd(t, files(a, b), append(activation(":second"), "LISTEN_FDS=2")...)
	if len(rep.Sockets) != 2 || rep.Sockets[0].Name != "unknown" || rep.Sockets[1].Name != "second" {
		t.Errorf("LISTEN_FDNAMES :second: sockets %+v, err %q", rep.Sockets, rep.Err)
	}
}

// Sockets systemd passed that no spec asks for are kept, after the others.
func TestSystemdUnaskedKeptLast(t *testing.T) {
	web := listenFile(t, "tcp", "127.0.0.1:0")
	rep := runSystemd(t, files(web), append(activation("web", "own=tcp://127.0.0.1:0"), "LISTEN_FDS=1")...)
	if rep.Err != "" {
		t.Fatal(rep.Err)
	}
	if len(rep.Sockets) != 2 || rep.Sockets[0].Name != "own" || rep.Sockets[0].Inherited {
		t.Fatalf("sockets %+v, want own (bound) then web (inherited)", rep.Sockets)
	}
	checkAdopted(t, rep.Sockets[1], "web", 3, web)
}

func TestSystemdKindMismatch(t *testing.T) {
	web := listenFile(t, "tcp", "127.0.0.1:0")
	rep := runSystemd(t, files(web), append(activation("web", "web=udp://127.0.0.1:0"), "LISTEN_FDS=1")...)
	if !strings.Contains(rep.Err, "systemd passed a tcp socket") {
		t.Errorf("a udp spec named like systemd's tcp socket: err %q, sockets %+v", rep.Err, rep.Sockets)
	}
}

// LISTEN_PID of another process means the variables were meant for somebody
// else (our parent's child, say): they are ignored, and still unset.
func TestSystemdOtherPIDIgnored(t *testing.T) {
	web := listenFile(t, "tcp", "127.0.0.1:0")
	other := "LISTEN_PID=" + strconv.Itoa(os.Getpid())
	env := []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=web", other, envSpecs + "=web=tcp://127.0.0.1:0"}
	rep := runSystemd(t, files(web), env...)
	if rep.Err != "" {
		t.Fatal(rep.Err)
	}
	if len(rep.Sockets) != 1 || rep.Sockets[0].Inherited || rep.Sockets[0].Inode == web.inode {
		t.Errorf("sockets %+v: want web bound afresh, fd 3 ignored", rep.Sockets)
	}
	checkConsumed(t, rep)

	// With no spec there is then nothing to open.
	rep = runSystemd(t, files(web), "LISTEN_FDS=1", "LISTEN_FDNAMES=web", other)
	if !strings.Contains(rep.Err, "no sockets") {
		t.Errorf("err %q, sockets %+v; want no sockets", rep.Err, rep.Sockets)
	}
	checkConsumed(t, rep)
}

// Open and FDs keep the blocking mode systemd gave an inherited socket.
func TestSystemdBlockingModeKept(t *testing.T) {
	web := listenFile(t, "tcp", "127.0.0.1:0")
	for _, mode := range []string{"0", "1"} {
		rep := runSystemd(t, files(web), append(activation("web"), "LISTEN_FDS=1", envNonblock+"="+mode)...)
		if rep.Err != "" {
			t.Fatal(rep.Err)
		}
		if len(rep.FlagsBefore) != 1 || len(rep.FlagsAfter) != 1 {
			t.Fatalf("flags %v / %v", rep.FlagsBefore, rep.FlagsAfter)
		}
		nonblock := rep.FlagsBefore[0]&unix.O_NONBLOCK != 0
		if nonblock != (mode == "1") {
			t.Fatalf("helper did not set O_NONBLOCK=%s: flags %#x", mode, rep.FlagsBefore[0])
		}
		if rep.FlagsBefore[0] != rep.FlagsAfter[0] {
			t.Errorf("O_NONBLOCK=%s: flags %#x before Open, %#x after", mode, rep.FlagsBefore[0], rep.FlagsAfter[0])
		}
	}
}

// Close leaves a unix socket file systemd created to systemd.
func TestSystemdCloseKeepsInheritedUnixFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	admin := listenFile(t, "unix", path)
	rep := runSystemd(t, files(admin), append(activation("admin"), "LISTEN_FDS=1", envClose+"=1")...)
	if rep.Err != "" {
		t.Fatal(rep.Err)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("Close removed systemd's socket file %s: %v", path, err)
	}
}

func TestSystemdBadCount(t *testing.T) {
	for _, count := range []string{"x", "-1", "4097"} {
		t.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
		t.Setenv("LISTEN_FDS", count)
		_, err := listener.Open(parseSpecs(t, "tcp://127.0.0.1:0"))
		if err == nil || !strings.Contains(err.Error(), "LISTEN_FDS") {
			t.Errorf("LISTEN_FDS=%q: %v; want an error about LISTEN_FDS", count, err)
		}
		if v, ok := os.LookupEnv("LISTEN_FDS"); ok {
			t.Errorf("LISTEN_FDS=%q still set after Open", v)
		}
	}
}

// In-process variant: with LISTEN_PID of another process nothing is taken
// (our fd 3 is not a socket from systemd) and the variables are consumed.
func TestSystemdOtherPIDInProcess(t *testing.T) {
	t.Setenv("LISTEN_PID", "1")
	t.Setenv("LISTEN_FDS", "1")
	t.Setenv("LISTEN_FDNAMES", "web")
	set := open(t, "web=tcp://127.0.0.1:0")
	if set.Sockets[0].Inherited {
		t.Error("took fd 3 although LISTEN_PID names another process")
	}
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if v, ok := os.LookupEnv(k); ok {
			t.Errorf("%s=%q still set after Open", k, v)
		}
	}
}
