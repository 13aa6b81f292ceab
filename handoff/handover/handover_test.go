package handover_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/handoff"
	"github.com/procswitch/supervisor/handoff/handover"
	"github.com/procswitch/supervisor/internal/contract"
	"golang.org/x/sys/unix"
)

// clearEnv unsets the contract's variables for the test, in case the tests
// themselves run under a supervisor.
func clearEnv(t *testing.T) {
	for _, k := range []string{contract.EnvListenPID, contract.EnvListenFDs, contract.EnvListenFDNames,
		contract.EnvNotifySocket, contract.EnvMode, contract.EnvSnapshot, contract.EnvHandoverFD} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
}

func TestModeAndSnapshot(t *testing.T) {
	clearEnv(t)
	if handover.Enabled() || handover.SnapshotPath() != "" {
		t.Errorf("without the supervisor: Enabled %v, SnapshotPath %q; want false, \"\"", handover.Enabled(), handover.SnapshotPath())
	}
	t.Setenv(contract.EnvMode, contract.ModeHandover)
	t.Setenv(contract.EnvSnapshot, "/var/lib/game/snapshot")
	if !handover.Enabled() || handover.SnapshotPath() != "/var/lib/game/snapshot" {
		t.Errorf("in handover mode: Enabled %v, SnapshotPath %q", handover.Enabled(), handover.SnapshotPath())
	}
}

// A worker not started by the supervisor: Await returns at once with
// nothing, nothing can be stored, and Saved and Barrier do nothing.
func TestUnsupervised(t *testing.T) {
	clearEnv(t)
	w, err := handoff.New()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	conns, err := handover.Await(context.Background(), w)
	if err != nil || len(conns) != 0 || handover.HandedOver(w) {
		t.Errorf("Await: %v, %v, HandedOver %v; want nothing, at once", conns, err, handover.HandedOver(w))
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if err := handover.StoreConns(w, []handoff.Conn{{Name: "p", Conn: a}}); err == nil {
		t.Error("StoreConns of a net.Pipe without a notify socket: nil error")
	}
	if err := handover.Saved(w); err != nil {
		t.Errorf("Saved, not supervised: %v", err)
	}
	if err := handover.Barrier(w, time.Second); err != nil {
		t.Errorf("Barrier, not supervised: %v", err)
	}
	if err := handover.Failed(w, "disk full"); err != nil {
		t.Errorf("Failed, not supervised: %v", err)
	}
}

// Failed sends HANDOVER=failed with the reason made one line.
func TestFailed(t *testing.T) {
	clearEnv(t)
	path := filepath.Join(t.TempDir(), "notify")
	rx, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	t.Setenv(contract.EnvNotifySocket, path)
	w, err := handoff.New()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := handover.Failed(w, "saving: write /var/lib/game/snapshot.tmp:\nno space left on device\x00"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	rx.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := rx.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	want := "HANDOVER=failed\nHANDOVER_ERROR=saving: write /var/lib/game/snapshot.tmp: no space left on device"
	if got := string(buf[:n]); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// The steps, through package handoff's Worker: the connections handed over
// on the handover connection, then storing one and saying HANDOVER=saved on
// the notify socket.
func TestSteps(t *testing.T) {
	clearEnv(t)
	notify := listenNotify(t)
	sup := handoverConn(t)
	w, err := handoff.New()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	peer, conn := tcpPair(t)
	go func() {
		buf := make([]byte, 64)
		if n, err := sup.Read(buf); err != nil || string(buf[:n]) != contract.HandoverWaiting {
			t.Errorf("handover connection: read %q, %v; want WAITING", buf[:n], err)
		}
		fd := fdOf(t, conn)
		sup.WriteMsgUnix([]byte(contract.HandoverFDsKey+"alice"), unix.UnixRights(fd), nil)
		sup.Write([]byte(contract.HandoverGo))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conns, err := handover.Await(ctx, w)
	if err != nil || len(conns) != 1 || conns[0].Name != "alice" || !handover.HandedOver(w) {
		t.Fatalf("Await: %v, %v, HandedOver %v; want alice's connection", conns, err, handover.HandedOver(w))
	}
	defer conns[0].Close()
	if conns[0].RemoteAddr().String() != peer.LocalAddr().String() {
		t.Errorf("alice's connection goes to %v, want %v", conns[0].RemoteAddr(), peer.LocalAddr())
	}

	if err := handover.StoreConn(w, "alice", conns[0].Conn.(syscall.Conn)); err != nil {
		t.Fatal(err)
	}
	msg, fds := readNotify(t, notify)
	if msg != contract.MsgFDStore+"\n"+contract.MsgFDNameKey+"alice" || len(fds) != 1 {
		t.Errorf("StoreConn sent %q with %d fds; want FDSTORE=1 FDNAME=alice with one", msg, len(fds))
	}
	closeAll(fds)
	saved := make(chan error, 1)
	go func() { saved <- handover.Saved(w) }()
	if msg, _ := readNotify(t, notify); msg != contract.MsgHandoverSaved {
		t.Errorf("Saved sent %q, want %s", msg, contract.MsgHandoverSaved)
	}
	msg, fds = readNotify(t, notify)
	if msg != "BARRIER=1" || len(fds) != 1 {
		t.Fatalf("then %q with %d fds; want BARRIER=1 with the pipe", msg, len(fds))
	}
	select {
	case err := <-saved:
		t.Fatalf("Saved returned %v before the barrier was released", err)
	case <-time.After(20 * time.Millisecond):
	}
	closeAll(fds) // the supervisor got there
	if err := <-saved; err != nil {
		t.Errorf("Saved: %v", err)
	}
}

func listenNotify(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv(contract.EnvNotifySocket, path)
	return c
}

func readNotify(t *testing.T, c *net.UnixConn) (string, []int) {
	t.Helper()
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*8))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
	for _, m := range msgs {
		rights, _ := unix.ParseUnixRights(&m)
		fds = append(fds, rights...)
	}
	return string(buf[:n]), fds
}

// handoverConn is the supervisor's end of a handover connection whose other
// end SUPERVISOR_HANDOVER_FD names.
func handoverConn(t *testing.T) *net.UnixConn {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "supervisor end")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv(contract.EnvMode, contract.ModeHandover)
	t.Setenv(contract.EnvHandoverFD, strconv.Itoa(fds[1]))
	return c.(*net.UnixConn)
}

func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// fdOf returns a duplicate of c's fd, which the test closes at its end.
func fdOf(t *testing.T, c net.Conn) int {
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Error(err)
		return -1
	}
	dup := -1
	rc.Control(func(fd uintptr) { dup, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) })
	if err != nil {
		t.Error(err)
	}
	t.Cleanup(func() { unix.Close(dup) })
	return dup
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// ErrHandoverAborted: the supervisor closes the handover connection
// instead of saying GO.
func TestAborted(t *testing.T) {
	clearEnv(t)
	sup := handoverConn(t)
	w, err := handoff.New()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	go func() {
		buf := make([]byte, 64)
		sup.Read(buf)
		sup.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := handover.Await(ctx, w); !errors.Is(err, handoff.ErrHandoverAborted) {
		t.Errorf("Await: %v, want handoff.ErrHandoverAborted", err)
	}
	if handover.HandedOver(w) {
		t.Error("HandedOver after an aborted handover")
	}
}
