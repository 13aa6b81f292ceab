package ready

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary doubles as a worker: TestMain dispatches on helperEnv to a
// named helper. Each gets listening sockets as fds 3, 4, …, says "ready" on
// stdout once it has done what its name says, and exits when its stdin
// closes.
const (
	helperEnv = "READY_TEST_HELPER"
	countEnv  = "READY_TEST_COUNT" // "accept": how many of fds 3… to accept on
)

// helperTimeout bounds each helper process and each wait on it.
const helperTimeout = 30 * time.Second

var helpers = map[string]func() error{
	"accept":    helperAccept,    // Go's net.FileListener: epoll
	"hold":      helperHold,      // holds the socket, never accepts
	"accept4":   helperAccept4,   // a thread blocked in accept4(2)
	"rawaccept": helperRawAccept, // a thread blocked in accept(2) (accept4 where there is none)
}

func TestMain(m *testing.M) {
	name := os.Getenv(helperEnv)
	if name == "" {
		os.Exit(m.Run())
	}
	fn, ok := helpers[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "ready test: unknown helper %q\n", name)
		os.Exit(2)
	}
	// Whatever the helper is doing, stdin's EOF ends it.
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	if err := fn(); err != nil {
		fmt.Fprintf(os.Stderr, "ready test: helper %s: %v\n", name, err)
		os.Exit(1)
	}
	select {}
}

func sayReady() error {
	_, err := os.Stdout.WriteString("ready\n")
	return err
}

func helperAccept() error {
	n, err := strconv.Atoi(os.Getenv(countEnv))
	if err != nil {
		return err
	}
	for i := range n {
		ln, err := net.FileListener(os.NewFile(uintptr(3+i), "listener"))
		if err != nil {
			return err
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	return sayReady()
}

func helperHold() error { return sayReady() }

func helperAccept4() error {
	if err := sayReady(); err != nil {
		return err
	}
	for {
		fd, _, err := unix.Accept4(3, unix.SOCK_CLOEXEC)
		if err != nil && err != unix.EINTR {
			return err
		}
		if err == nil {
			unix.Close(fd)
		}
	}
}

func helperRawAccept() error {
	if err := sayReady(); err != nil {
		return err
	}
	for {
		fd, _, errno := syscall.Syscall(uintptr(sysAccept), 3, 0, 0)
		if errno != 0 && errno != unix.EINTR {
			return errno
		}
		if errno == 0 {
			unix.Close(int(fd))
		}
	}
}

// sock is a listening socket on loopback the test hands to helpers.
type sock struct {
	file  *os.File // for cmd.ExtraFiles
	inode uint64
	addr  string
}

// listenTCP opens a listening socket on loopback, blocking (as systemd
// passes them), outside Go's poller: this process never accepts on it.
func listenTCP(t *testing.T) sock {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "listener")
	t.Cleanup(func() { f.Close() })
	return sock{file: f, inode: inodeOf(t, fd), addr: fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)}
}

func inodeOf(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// startHelper starts the named helper with socks as fds 3, 4, … and returns
// its PID once it has said "ready". The helper is stopped when the test ends.
func startHelper(t *testing.T, name string, socks []sock, env ...string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), helperTimeout)
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+name, "GORACE=atexit_sleep_ms=0 "+os.Getenv("GORACE"))
	cmd.Env = append(cmd.Env, env...)
	for _, s := range socks {
		cmd.ExtraFiles = append(cmd.ExtraFiles, s.file)
	}
	cmd.Stderr = os.Stderr
	cmd.WaitDelay = time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
		cancel()
	})
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		if s != "ready\n" {
			t.Fatalf("helper %s said %q, want ready", name, s)
		}
	case <-ctx.Done():
		t.Fatalf("helper %s not ready within %v", name, helperTimeout)
	}
	return cmd.Process.Pid
}

func TestAcceptingChildEpoll(t *testing.T) {
	a, b := listenTCP(t), listenTCP(t)
	// The helper accepts on a (fd 3) only; it merely holds b (fd 4).
	pid := startHelper(t, "accept", []sock{a, b}, countEnv+"=1")
	tests := []struct {
		inodes []uint64
		want   bool
	}{
		{[]uint64{a.inode}, true},
		{[]uint64{b.inode}, false},
		{[]uint64{a.inode, b.inode}, false},
		{[]uint64{a.inode, a.inode}, true},
		{nil, true},
	}
	for _, tt := range tests {
		if got := Accepting(pid, tt.inodes); got != tt.want {
			t.Errorf("Accepting(%d, %v) = %v, want %v", pid, tt.inodes, got, tt.want)
		}
	}
	// The probe agrees, and the socket really is served.
	ctx, cancel := context.WithTimeout(context.Background(), helperTimeout)
	defer cancel()
	if err := (Probe{Mode: TCP}).Await(ctx, Target{PID: pid, Sockets: []uint64{a.inode}}); err != nil {
		t.Errorf("Await(tcp) = %v", err)
	}
	dialAndWaitClose(t, a.addr)
}

func TestAcceptingChildEpollBoth(t *testing.T) {
	a, b := listenTCP(t), listenTCP(t)
	pid := startHelper(t, "accept", []sock{a, b}, countEnv+"=2")
	if !Accepting(pid, []uint64{a.inode, b.inode}) {
		t.Errorf("Accepting(%d, both) = false for a process accepting on both", pid)
	}
}

// dialAndWaitClose connects and waits, bounded, for the acceptor to close the
// connection: the proof that somebody accepted it.
func dialAndWaitClose(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, helperTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(helperTimeout))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read from %s: %v, want EOF from the acceptor closing", addr, err)
	}
}

func TestNotAcceptingChildHolding(t *testing.T) {
	a := listenTCP(t)
	pid := startHelper(t, "hold", []sock{a})
	// The helper said ready: it holds fd 3 and will never accept on it.
	if Accepting(pid, []uint64{a.inode}) {
		t.Errorf("Accepting(%d) = true for a process that only holds the socket", pid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := (Probe{Mode: TCP}).Await(ctx, Target{PID: pid, Sockets: []uint64{a.inode}})
	if err != ctx.Err() || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Await(tcp) on a holder = %v, want ctx.Err()", err)
	}
}

// A thread blocked in accept(2) or accept4(2) counts. The helper can say
// ready only before it blocks, so the wait is the probe's own poll, bounded.
func TestAcceptingChildBlockedInAccept(t *testing.T) {
	for _, name := range []string{"accept4", "rawaccept"} {
		t.Run(name, func(t *testing.T) {
			a, b := listenTCP(t), listenTCP(t)
			pid := startHelper(t, name, []sock{a, b})
			if _, err := os.Stat("/proc/" + strconv.Itoa(pid) + "/syscall"); err != nil {
				t.Skipf("no /proc/PID/syscall: %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), helperTimeout)
			defer cancel()
			if err := (Probe{Mode: TCP}).Await(ctx, Target{PID: pid, Sockets: []uint64{a.inode}}); err != nil {
				t.Fatalf("Await(tcp) on a process blocked in %s: %v", name, err)
			}
			if Accepting(pid, []uint64{a.inode, b.inode}) {
				t.Errorf("Accepting(%d, [a b]) = true, but it accepts on a only", pid)
			}
			dialAndWaitClose(t, a.addr)
		})
	}
}

// The supervisor's own process: a Go listener is in the runtime's epoll set
// from the moment it exists; a raw socket outside the poller is not.
func TestAcceptingSelf(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ino uint64
	rc.Control(func(fd uintptr) { ino = inodeOf(t, int(fd)) })
	if !Accepting(os.Getpid(), []uint64{ino}) {
		t.Error("Accepting(self) = false for our own Go listener")
	}
	raw := listenTCP(t)
	if Accepting(os.Getpid(), []uint64{raw.inode}) {
		t.Error("Accepting(self) = true for a socket outside any epoll set")
	}
	if Accepting(os.Getpid(), []uint64{ino, raw.inode}) {
		t.Error("Accepting(self) = true although one socket is not accepted on")
	}
	dialAndWaitClose(t, ln.Addr().String())
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
}

func TestAcceptingNoProcess(t *testing.T) {
	if Accepting(1<<30, []uint64{1}) { // above any pid_max
		t.Error("Accepting(no such process) = true")
	}
	if !Accepting(1<<30, nil) {
		t.Error("Accepting(_, no sockets) = false: nothing to wait for")
	}
}

func TestEpollInodes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fdinfo")
	content := "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\n" +
		"tfd:        3 events:       19 data:                3  pos:0 ino:1a2b sdev:8\n" +
		"tfd:        7 events:    80000019 data:   7f00aa  pos:0 ino:ffffffff sdev:9\n" +
		"tfd:        9 events:       19 data: 9  pos:0 ino:zz sdev:8\n" +
		"not tfd: ino:55\n"
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	got := epollInodes(path)
	want := []uint64{0x1a2b, 0xffffffff}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("epollInodes = %v, want %v", got, want)
	}
	if got := epollInodes(filepath.Join(t.TempDir(), "missing")); got != nil {
		t.Errorf("epollInodes(missing) = %v", got)
	}
}

// acceptBlocked reads /proc/PID/task/*/syscall; a fake /proc tree shows how it
// treats each kind of line.
func TestAcceptBlockedParsing(t *testing.T) {
	proc := t.TempDir()
	task := func(tid, line string) {
		dir := filepath.Join(proc, "task", tid)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "syscall"), []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fd := func(n, target string) {
		if err := os.MkdirAll(filepath.Join(proc, "fd"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(proc, "fd", n)); err != nil {
			t.Fatal(err)
		}
	}
	fd("3", "socket:[1001]")
	fd("10", "socket:[1010]")
	fd("4", "socket:[1004]")
	fd("5", "pipe:[1005]")
	fd("6", "socket:[1006]")
	task("100", fmt.Sprintf("%d 0x3 0x0 0x0 0x80000 0x0 0x0 0x7ffd 0x4a5b\n", unix.SYS_ACCEPT4))
	task("101", fmt.Sprintf("%d 0xa 0x0 0x0 0x0 0x0 0x0 0x7ffd 0x4a5b\n", sysAccept))
	task("102", fmt.Sprintf("%d 0x4 0x0 0x0 0x0 0x0 0x0 0x7ffd 0x4a5b\n", unix.SYS_READ))
	task("103", fmt.Sprintf("%d 0x5 0x0 0x0 0x0 0x0 0x0 0x7ffd 0x4a5b\n", unix.SYS_ACCEPT4))  // a pipe
	task("104", fmt.Sprintf("%d 0x63 0x0 0x0 0x0 0x0 0x0 0x7ffd 0x4a5b\n", unix.SYS_ACCEPT4)) // no fd 99
	task("105", "running\n")
	task("106", "-1 0x7ffd 0x4a5b\n") // blocked, not in a syscall
	task("107", "")
	got := acceptBlocked(proc)
	want := map[uint64]bool{1001: true, 1010: true}
	if len(got) != len(want) {
		t.Fatalf("acceptBlocked = %v, want inodes %v", got, want)
	}
	for _, ino := range got {
		if !want[ino] {
			t.Errorf("acceptBlocked = %v, want inodes %v", got, want)
		}
	}
}

func TestSocketInode(t *testing.T) {
	dir := t.TempDir()
	for target, want := range map[string]uint64{"socket:[42]": 42, "pipe:[42]": 0, "socket:[x]": 0, "/dev/null": 0} {
		link := filepath.Join(dir, strings.NewReplacer("/", "_", ":", "_").Replace(target))
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		got, ok := socketInode(link)
		if got != want || ok != (want != 0) {
			t.Errorf("socketInode(-> %s) = %d, %v; want %d", target, got, ok, want)
		}
	}
	if _, ok := socketInode(filepath.Join(dir, "missing")); ok {
		t.Error("socketInode(missing) ok")
	}
}
