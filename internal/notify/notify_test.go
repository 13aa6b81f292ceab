package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The test binary doubles as a worker that speaks sd_notify: TestMain
// dispatches on helperEnv to a named helper.
const (
	helperEnv  = "NOTIFY_TEST_HELPER"
	messageEnv = "NOTIFY_TEST_MESSAGE" // what the "send" helper sends
)

// ioTimeout bounds every wait for a datagram or a helper.
const ioTimeout = 30 * time.Second

func TestMain(m *testing.M) {
	switch name := os.Getenv(helperEnv); name {
	case "":
		os.Exit(m.Run())
	case "send":
		if err := helperSend(); err != nil {
			fmt.Fprintln(os.Stderr, "notify test: send:", err)
			os.Exit(1)
		}
		os.Exit(0)
	default:
		fmt.Fprintf(os.Stderr, "notify test: unknown helper %q\n", name)
		os.Exit(2)
	}
}

// helperSend sends one datagram to NOTIFY_SOCKET, as sd_notify does, then
// stays alive until its stdin closes, so that its PID is not reused meanwhile.
func helperSend() error {
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: os.Getenv("NOTIFY_SOCKET"), Net: "unixgram"})
	if err != nil {
		return err
	}
	if _, err := c.Write([]byte(os.Getenv(messageEnv))); err != nil {
		return err
	}
	c.Close()
	_, err = io.Copy(io.Discard, os.Stdin)
	return err
}

func listen(t *testing.T) *Socket {
	t.Helper()
	s, err := Listen(filepath.Join(t.TempDir(), "notify.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// read reads one message, bounded: past ioTimeout it closes the socket, which
// makes Read return.
func read(t *testing.T, s *Socket) Message {
	t.Helper()
	type result struct {
		msg Message
		err error
	}
	ch := make(chan result, 1)
	go func() {
		m, err := s.Read()
		ch <- result{m, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Read: %v", r.err)
		}
		return r.msg
	case <-time.After(ioTimeout):
		s.Close()
		<-ch
		t.Fatalf("no datagram within %v", ioTimeout)
	}
	return Message{}
}

// send sends a datagram to s from this process, with fds if any, as
// sd_pid_notify_with_fds does: sendmsg on an unconnected datagram socket.
func send(t *testing.T, s *Socket, msg string, fds ...int) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(fd, []byte(msg), oob, &unix.SockaddrUnix{Name: s.Path()}, 0); err != nil {
		t.Fatalf("sendmsg: %v", err)
	}
}

func TestCredentialsFromChild(t *testing.T) {
	s := listen(t)
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=send", "NOTIFY_SOCKET="+s.Path(),
		messageEnv+"=READY=1\nSTATUS=serving 3 players\nMAINPID=42",
		"GORACE=atexit_sleep_ms=0 "+os.Getenv("GORACE"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper: %v\n%s", err, stderr.String())
		}
	}()

	msg := read(t, s)
	if msg.PID != cmd.Process.Pid {
		t.Errorf("PID = %d, want the sender's %d", msg.PID, cmd.Process.Pid)
	}
	if msg.UID != os.Getuid() {
		t.Errorf("UID = %d, want %d", msg.UID, os.Getuid())
	}
	want := map[string]string{"READY": "1", "STATUS": "serving 3 players", "MAINPID": "42"}
	if !maps.Equal(msg.Vars, want) {
		t.Errorf("Vars = %q, want %q", msg.Vars, want)
	}
	if !msg.Has("READY", "1") || len(msg.FDs) != 0 {
		t.Errorf("message %+v: want READY=1 and no fds", msg)
	}
}

func TestMessagesInOrderWithOwnPID(t *testing.T) {
	s := listen(t)
	msgs := []string{
		"READY=1\nSTATUS=Serving\nMAINPID=42\nFDSTORE=1\nFDNAME=conn-7\n",
		"STOPPING=1",
		"WATCHDOG=1",
	}
	for _, m := range msgs {
		send(t, s, m)
	}
	for _, m := range msgs {
		got := read(t, s)
		if got.PID != os.Getpid() || got.UID != os.Getuid() {
			t.Errorf("credentials pid %d uid %d, want %d %d", got.PID, got.UID, os.Getpid(), os.Getuid())
		}
		if want := ParseVars(m); !maps.Equal(got.Vars, want) {
			t.Errorf("Vars = %q, want %q", got.Vars, want)
		}
	}
}

func TestLargestMessage(t *testing.T) {
	s := listen(t)
	status := strings.Repeat("x", MaxMessage-len("READY=1\nSTATUS="))
	send(t, s, "READY=1\nSTATUS="+status)
	got := read(t, s)
	if !got.Has("READY", "1") || got.Vars["STATUS"] != status {
		t.Errorf("a %d-byte message arrived as READY=%q and %d bytes of STATUS", MaxMessage, got.Vars["READY"], len(got.Vars["STATUS"]))
	}
}

// TestMostFDs: the fullest FDSTORE=1 a worker sends (handoff.StoreConns),
// 253 fds (the kernel's SCM_MAX_FD) and a list of their names filling
// MaxMessage, arrives whole.
func TestMostFDs(t *testing.T) {
	s := listen(t)
	const n = 253
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	fds := make([]int, n)
	for i := range fds {
		fds[i] = int(w.Fd()) // the same pipe, n times
	}
	prefix := "FDSTORE=1\nFDNAME="
	names := make([]string, n)
	each := (MaxMessage - len(prefix) - (n - 1)) / n
	for i := range names {
		names[i] = fmt.Sprintf("%0*d", each, i)
	}
	msg := prefix + strings.Join(names, ":")
	msg += strings.Repeat("x", MaxMessage-len(msg)) // the last name takes the rest
	send(t, s, msg, fds...)
	got := read(t, s)
	defer got.CloseFDs()
	if len(got.FDs) != n || got.Vars["FDNAME"] != msg[len(prefix):] {
		t.Fatalf("a datagram of %d bytes with %d fds arrived with %d fds and a %d-byte FDNAME",
			len(msg), n, len(got.FDs), len(got.Vars["FDNAME"]))
	}
}

// waitEOF waits, bounded, for EOF on r: it comes once every write end of
// the pipe is closed, which proves that a received copy was closed.
func waitEOF(t *testing.T, r *os.File) {
	t.Helper()
	if err := r.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(r); err != nil {
		t.Fatalf("waiting for EOF (a write end is still open somewhere): %v", err)
	}
}

func TestFDsPassedAndClosed(t *testing.T) {
	s := listen(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sp[0])
	send(t, s, "FDSTORE=1\nFDNAME=conn-1:conn-2", int(w.Fd()), sp[1])
	unix.Close(sp[1])
	w.Close() // the received copy is now the only write end

	msg := read(t, s)
	if !msg.Has("FDSTORE", "1") || msg.Vars["FDNAME"] != "conn-1:conn-2" {
		t.Errorf("Vars = %q", msg.Vars)
	}
	if len(msg.FDs) != 2 {
		t.Fatalf("FDs = %v, want 2", msg.FDs)
	}
	for _, fd := range msg.FDs {
		fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || fl&unix.FD_CLOEXEC == 0 {
			t.Errorf("received fd %d is not close-on-exec (%#x, %v): it would leak into every worker", fd, fl, err)
		}
	}
	// The fds are the very pipe and socket that were sent.
	if _, err := unix.Write(msg.FDs[0], []byte("through the pipe")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := r.Read(buf); err != nil || string(buf[:n]) != "through the pipe" {
		t.Errorf("read %q, %v from the pipe", buf[:n], err)
	}
	if _, err := unix.Write(msg.FDs[1], []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if n, err := unix.Read(sp[0], buf); err != nil || string(buf[:n]) != "hi" {
		t.Errorf("read %q, %v from the socket pair", buf[:n], err)
	}

	msg.CloseFDs()
	waitEOF(t, r)
	if n, err := unix.Read(sp[0], buf); err != nil || n != 0 {
		t.Errorf("socket pair: read %d, %v after CloseFDs; want EOF", n, err)
	}
}

func TestSocketFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "notify.sock")
	// A stale file from a previous run is replaced.
	if err := os.WriteFile(path, []byte("stale"), 0o666); err != nil {
		t.Fatal(err)
	}
	s, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want a socket with 0600", fi.Mode())
	}
	on, err := unix.GetsockoptInt(socketFD(t, s), unix.SOL_SOCKET, unix.SO_PASSCRED)
	if err != nil || on != 1 {
		t.Errorf("SO_PASSCRED = %d, %v; want 1", on, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists after Close: %v", path, err)
	}
}

func socketFD(t *testing.T, s *Socket) int {
	t.Helper()
	rc, err := s.conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	rc.Control(func(raw uintptr) { fd = int(raw) })
	return fd
}

func TestListenErrors(t *testing.T) {
	_, err := Listen(filepath.Join(t.TempDir(), "missing", "notify.sock"))
	if err == nil || !strings.HasPrefix(err.Error(), "notify: ") {
		t.Errorf("Listen in a missing directory: %v; want a notify: error", err)
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	s, err := Listen(filepath.Join(t.TempDir(), "notify.sock"))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := s.Read()
		errc <- err
	}()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(ioTimeout):
		t.Fatal("Read still blocked after Close")
	}
}

func TestParseControl(t *testing.T) {
	if _, err := parseControl(nil); !errors.Is(err, ErrNoCredentials) {
		t.Errorf("parseControl(nil): %v, want ErrNoCredentials", err)
	}

	// fds that come without credentials are closed, not leaked.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	dup, err := unix.FcntlInt(w.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	msg, err := parseControl(unix.UnixRights(dup))
	if !errors.Is(err, ErrNoCredentials) || len(msg.FDs) != 0 {
		t.Errorf("parseControl(rights only) = %+v, %v; want ErrNoCredentials", msg, err)
	}
	waitEOF(t, r)

	// Credentials and rights together.
	cred := unix.UnixCredentials(&unix.Ucred{Pid: 1234, Uid: 56, Gid: 78})
	msg, err = parseControl(append(cred, unix.UnixRights(0)...))
	if err != nil || msg.PID != 1234 || msg.UID != 56 || len(msg.FDs) != 1 || msg.FDs[0] != 0 {
		t.Errorf("parseControl(creds+rights) = %+v, %v", msg, err)
	}

	// A header that claims more than there is.
	bad := make([]byte, unix.CmsgSpace(0))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&bad[0]))
	h.Level, h.Type = unix.SOL_SOCKET, unix.SCM_CREDENTIALS
	h.SetLen(1000)
	if _, err := parseControl(bad); err == nil || errors.Is(err, ErrNoCredentials) {
		t.Errorf("parseControl(truncated header): %v, want a control message error", err)
	}
}

func TestParseVars(t *testing.T) {
	tests := []struct {
		in   string
		want map[string]string
	}{
		{"", map[string]string{}},
		{"\n\n", map[string]string{}},
		{"READY=1", map[string]string{"READY": "1"}},
		{"READY=1\n", map[string]string{"READY": "1"}},
		{"READY=1\nSTATUS=up and running\nMAINPID=7", map[string]string{"READY": "1", "STATUS": "up and running", "MAINPID": "7"}},
		{"A=1\n\nB=2", map[string]string{"A": "1", "B": "2"}},
		{"READY", map[string]string{}},                   // no '=': ignored
		{"=x\nREADY=1", map[string]string{"READY": "1"}}, // empty key: ignored
		{"STATUS=a=b=c", map[string]string{"STATUS": "a=b=c"}},
		{"STATUS=", map[string]string{"STATUS": ""}},
		{"STATUS=one\nSTATUS=two", map[string]string{"STATUS": "two"}}, // the last wins
		{"STATUS= padded ", map[string]string{"STATUS": " padded "}},
		{"FDNAME=a:b", map[string]string{"FDNAME": "a:b"}},
		{"READY=1\r\n", map[string]string{"READY": "1\r"}}, // no CRLF in the protocol
	}
	for _, tt := range tests {
		if got := ParseVars(tt.in); !maps.Equal(got, tt.want) {
			t.Errorf("ParseVars(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestHas(t *testing.T) {
	m := Message{Vars: map[string]string{"READY": "1", "STATUS": ""}}
	tests := []struct {
		key, value string
		want       bool
	}{
		{"READY", "1", true},
		{"READY", "0", false},
		{"STATUS", "", true},
		{"STOPPING", "", false},
		{"STOPPING", "1", false},
	}
	for _, tt := range tests {
		if got := m.Has(tt.key, tt.value); got != tt.want {
			t.Errorf("Has(%q, %q) = %v, want %v", tt.key, tt.value, got, tt.want)
		}
	}
	if (Message{}).Has("READY", "") {
		t.Error("a message without vars has READY")
	}
}

// systemd ignores a notification that does not fit its buffer; here a longer
// datagram is cut at MaxMessage and the cut-off assignment is believed.
func TestOversizedMessageRejected(t *testing.T) {
	s := listen(t)
	send(t, s, "READY=1\nFDNAME="+strings.Repeat("n", MaxMessage))
	type result struct {
		msg Message
		err error
	}
	ch := make(chan result, 1)
	go func() {
		m, err := s.Read()
		ch <- result{m, err}
	}()
	select {
	case r := <-ch:
		if r.err == nil {
			t.Errorf("an oversized datagram was read as READY=%q and a %d-byte FDNAME", r.msg.Vars["READY"], len(r.msg.Vars["FDNAME"]))
		}
	case <-time.After(ioTimeout):
		s.Close()
		t.Fatal("no datagram")
	}
}
