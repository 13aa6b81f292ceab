package handoff

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/internal/contract"
	"github.com/procswitch/supervisor/internal/fdbatch"
	"golang.org/x/sys/unix"
)

// storeReader is a fake supervisor's notify socket: it reads FDSTORE=1
// datagrams and keeps, per datagram, the FDNAME and the fds received.
type storeReader struct {
	t    *testing.T
	path string
	rx   *net.UnixConn
}

type storeMsg struct {
	text string
	fds  []int
}

func newStoreReader(t *testing.T) *storeReader {
	t.Helper()
	path := filepath.Join(shortTempDir(t), "notify")
	rx, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rx.Close() })
	return &storeReader{t: t, path: path, rx: rx}
}

// read reads one datagram, bounded; its fds are closed at the test's end.
func (r *storeReader) read() storeMsg {
	r.t.Helper()
	buf, oob := make([]byte, maxStoreMessage+1), make([]byte, unix.CmsgSpace(4*maxStoreFDs))
	r.rx.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, oobn, flags, _, err := r.rx.ReadMsgUnix(buf, oob)
	if err != nil {
		r.t.Fatalf("reading a notify datagram: %v", err)
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		r.t.Fatalf("datagram of %d bytes truncated (flags %#x): over the supervisor's limits", n, flags)
	}
	fds, err := fdbatch.Rights(oob[:oobn])
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	return storeMsg{text: string(buf[:n]), fds: fds}
}

// storeWorker is a Worker with just a notify socket, as New makes it.
func storeWorker(t *testing.T, notifyAddr string) *Worker {
	w := &Worker{notifyAddr: notifyAddr}
	t.Cleanup(func() {
		if w.storeFD > 0 {
			unix.Close(w.storeFD)
		}
	})
	return w
}

// socketPairs returns n connected pairs: the conns to store, and the fds
// of their peers.
func socketPairs(t *testing.T, n int) ([]net.Conn, []int) {
	t.Helper()
	conns, peers := make([]net.Conn, n), make([]int, n)
	for i := range n {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(fds[0]), "conn")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i], peers[i] = c, fds[1]
		t.Cleanup(func() { c.Close(); unix.Close(fds[1]) })
	}
	return conns, peers
}

// sameSocket says whether two fds are the same socket.
func sameSocket(t *testing.T, a, b int) bool {
	t.Helper()
	var sa, sb unix.Stat_t
	if err := unix.Fstat(a, &sa); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstat(b, &sb); err != nil {
		t.Fatal(err)
	}
	return sa.Ino == sb.Ino && sa.Dev == sb.Dev
}

func TestStoreConnsBatches(t *testing.T) {
	long := strings.Repeat("x", 200) // 20 such names fill a datagram's 4096 bytes
	tests := []struct {
		name  string
		n     int
		named func(i int) string
		want  []int // fds per datagram
	}{
		{"one name, systemd's FDSTORE", 600, func(int) string { return "conn" }, []int{253, 253, 94}},
		{"a name each, listed", 600, func(i int) string { return fmt.Sprintf("c%d", i) }, []int{253, 253, 94}},
		{"long names, 4096 bytes a datagram", 45, func(i int) string { return fmt.Sprintf("%s%03d", long, i) }, []int{19, 19, 7}},
		{"one", 1, func(int) string { return "solo" }, []int{1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newStoreReader(t)
			w := storeWorker(t, r.path)
			conns, _ := socketPairs(t, tc.n)
			store := make([]Conn, tc.n)
			for i, c := range conns {
				store[i] = Conn{Name: tc.named(i), Conn: c}
			}
			if err := w.storeConns(store); err != nil {
				t.Fatal(err)
			}
			next := 0
			for d, want := range tc.want {
				m := r.read()
				if len(m.fds) != want {
					t.Fatalf("datagram %d carries %d fds, want %d", d, len(m.fds), want)
				}
				names := make([]string, want)
				for i := range names {
					names[i] = store[next+i].Name
				}
				fdname := strings.Join(names, ":")
				if tc.named(0) == tc.named(1) {
					fdname = names[0] // systemd's form: one name for all
				}
				if wantText := contract.MsgFDStore + "\n" + contract.MsgFDNameKey + fdname; m.text != wantText {
					t.Fatalf("datagram %d: %.80q..., want %.80q...", d, m.text, wantText)
				}
				for i, fd := range m.fds {
					if !sameSocket(t, fd, fdOf(t, conns[next+i])) {
						t.Fatalf("datagram %d, fd %d is not connection %d", d, i, next+i)
					}
				}
				next += want
			}
		})
	}
}

func fdOf(t *testing.T, c net.Conn) int {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	rc.Control(func(s uintptr) { fd = int(s) })
	return fd
}

// TestStoreConnsSkipsClosed: a closed connection is left out and named in
// the error; the others are stored.
func TestStoreConnsSkipsClosed(t *testing.T) {
	r := newStoreReader(t)
	w := storeWorker(t, r.path)
	conns, _ := socketPairs(t, 3)
	conns[1].Close()
	err := w.storeConns([]Conn{{"a", conns[0]}, {"b", conns[1]}, {"c", conns[2]}})
	if err == nil || !strings.Contains(err.Error(), "store b") {
		t.Fatalf("StoreConns with a closed connection: %v, want an error naming b", err)
	}
	m := r.read()
	if len(m.fds) != 2 || m.text != "FDSTORE=1\nFDNAME=a:c" {
		t.Fatalf("got %q with %d fds, want a:c with 2", m.text, len(m.fds))
	}
}

func TestStoreConnsRefusesBadNames(t *testing.T) {
	conns, _ := socketPairs(t, 1)
	w := &Worker{notifyAddr: "/nonexistent"}
	for _, name := range []string{"", "a:b", "a b", "tab\t", strings.Repeat("n", 256)} {
		if err := w.storeConns([]Conn{{name, conns[0]}}); err == nil {
			t.Errorf("StoreConns accepted the name %q", name)
		}
	}
	if err := (&Worker{}).storeConns([]Conn{{"c", conns[0]}}); err == nil {
		t.Error("StoreConns without a notify socket returned nil")
	}
}

// TestStoreConnsSurvivesSignals is TestStoreConnSurvivesSignals for the
// batched sends: a full queue, a slow reader, and signals all the while.
func TestStoreConnsSurvivesSignals(t *testing.T) {
	r := newStoreReader(t)
	w := storeWorker(t, r.path)
	const n = 20 * maxStoreFDs // 20 datagrams: twice the queue of 10
	conns, _ := socketPairs(t, 1)
	store := make([]Conn, n)
	for i := range store {
		store[i] = Conn{Name: fmt.Sprintf("c%d", i), Conn: conns[0]} // one socket, n times
	}
	var received atomic.Int64
	done := make(chan struct{})
	go func() { // a slow reader, so that sends block on a full queue
		defer close(done)
		buf, oob := make([]byte, maxStoreMessage), make([]byte, unix.CmsgSpace(4*maxStoreFDs))
		for received.Load() < n {
			r.rx.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, oobn, _, _, err := r.rx.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			fds, _ := fdbatch.Rights(oob[:oobn])
			for _, fd := range fds {
				unix.Close(fd)
			}
			received.Add(int64(len(fds)))
			time.Sleep(time.Millisecond)
		}
	}()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				syscall.Kill(os.Getpid(), syscall.SIGURG) // the Go runtime's own preemption signal
			}
		}
	}()
	if err := w.storeConns(store); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("reader did not finish")
	}
	if got := received.Load(); got != n {
		t.Fatalf("received %d of %d stored connections", got, n)
	}
}
