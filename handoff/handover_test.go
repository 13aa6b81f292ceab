package handoff

import (
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestStoreConnSurvivesSignals stores many connections into a slow reader's
// full queue while this process is showered with signals: a blocked send on
// a socket with a send timeout is not restarted after a signal, and losing
// one there loses a player's connection.
func TestStoreConnSurvivesSignals(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	rx, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[1])
	f := os.NewFile(uintptr(pair[0]), "conn")
	conn, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	const n = 300
	var received atomic.Int64
	done := make(chan struct{})
	go func() { // a slow reader, so that sends block on a full queue
		defer close(done)
		buf, oob := make([]byte, 256), make([]byte, unix.CmsgSpace(4))
		for received.Load() < n {
			rx.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, oobn, _, _, err := rx.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, m := range msgs {
					fds, _ := unix.ParseUnixRights(&m)
					for _, fd := range fds {
						unix.Close(fd)
					}
				}
			}
			received.Add(1)
			time.Sleep(100 * time.Microsecond)
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
	w := &Worker{notifyAddr: path}
	defer func() { unix.Close(w.storeFD) }()
	for i := range n {
		if err := w.storeConn("c"+string(rune('a'+i%26)), conn.(syscall.Conn)); err != nil {
			t.Fatalf("store %d of %d: %v", i+1, n, err)
		}
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

func TestBarrierWaitsForTheSupervisorToCloseItsFD(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	rx, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	w := &Worker{notifyAddr: path}
	defer func() { unix.Close(w.storeFD) }()

	// Nobody reads: the barrier is never processed, and it says so in time.
	if err := w.barrier(100 * time.Millisecond); err == nil {
		t.Fatal("Barrier returned nil though nothing processed it")
	}
	// A reader that processes messages in order and closes their fds.
	go func() {
		buf, oob := make([]byte, 64), make([]byte, unix.CmsgSpace(4))
		for {
			_, oobn, _, _, err := rx.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, m := range msgs {
				fds, _ := unix.ParseUnixRights(&m)
				for _, fd := range fds {
					unix.Close(fd)
				}
			}
		}
	}()
	if err := w.barrier(10 * time.Second); err != nil {
		t.Fatalf("Barrier with a reader: %v", err)
	}
}
