package supervisor

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/procswitch/supervisor/handoff"
	steps "github.com/procswitch/supervisor/handoff/handover"
	"golang.org/x/sys/unix"
)

// runLive is a worker for handover mode that uses the live fd store as a
// game would: its state, one counter, lives in a memfd stored as "state",
// and each connection is stored as it is accepted, so that a crash costs
// nothing. Each line on a connection:
//
//	INC     adds one to the counter and answers "<count> <pid>"
//	BYE     removes the connection from the store and closes it
//	DIE     kill -9 of the worker itself, nothing answered
//	STATE   when the state came: "start", "go" or "none" (created), and the pid
//	NAME    the connection's name in the store, and the pid
//	RESUMED the names of the connections it resumed at start or with GO,
//	        comma-separated ("-" for none), and the pid
//	NOPOLL  stores the connection again, under its name, with FDPOLL=0
//	        (removed first), and answers "nopoll <pid>"
//
// A connection whose client hung up is reported with STATUS=hung up <name>.
// At a handover it stores nothing: its connections are in the store. With
// gate, a worker started ahead of a handover waits, before it says
// WAITING, for EOF on the FIFO next to the mode file (liveGate).
func runLive(gate bool) int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "live:", err); return 2 }
	notifySocket := os.Getenv("NOTIFY_SOCKET") // handoff.New unsets it
	w, err := handoff.New()
	if err != nil {
		return fail(err)
	}
	ln, err := w.Listener("listen0")
	if err != nil {
		return fail(err)
	}
	// The store's memfd: passed at start, even to a worker started ahead of
	// a handover (the state comes ahead; the connections with GO).
	state, err := w.File("state")
	got := "start"
	if err != nil {
		got = "none"
	}
	if gate && steps.Ahead() {
		if err := liveGate(); err != nil {
			return fail(err)
		}
	}
	conns, err := steps.Await(context.Background(), w) // stored ones, by name
	if err != nil {
		return fail(err)
	}
	if state == nil {
		state, err = w.File("state") // GO
		if err == nil {
			got = "go"
		}
	}
	if err != nil {
		fd, err := unix.MemfdCreate("state", unix.MFD_CLOEXEC)
		if err != nil {
			return fail(err)
		}
		state = os.NewFile(uintptr(fd), "state")
		if err := state.Truncate(8); err != nil {
			return fail(err)
		}
		if err := w.StoreFD("state", state); err != nil {
			return fail(err)
		}
	}
	lw := &storeWorker{w: w, notify: notifySocket, state: state, got: got}
	for _, c := range conns {
		lw.resumed = append(lw.resumed, c.Name)
	}
	for _, c := range conns { // each may answer RESUMED at once: the list is complete first
		lw.serve(c.Conn, c.Name)
	}
	w.Ready()
	go func() {
		for i := 0; ; i++ {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			name := "c" + strconv.Itoa(os.Getpid()) + "-" + strconv.Itoa(i)
			if err := w.StoreFD(name, conn.(*net.TCPConn)); err != nil {
				fmt.Fprintln(os.Stderr, "live:", err)
			}
			lw.serve(conn, name)
		}
	}()
	<-w.Draining()
	ln.Close()
	lw.stopServing()
	steps.Saved(w) // the state and the connections are in the store already
	return 0
}

// liveGate waits for EOF on the FIFO <mode file>.gate: the test opens it
// for writing and closes it when the worker may go on. Opening it for
// reading blocks until the test opens it too, in either order.
func liveGate() error {
	f, err := os.Open(os.Getenv(envModeFile) + ".gate")
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}

type storeWorker struct {
	w       *handoff.Worker
	notify  string // NOTIFY_SOCKET, for storeNoPoll
	state   *os.File
	got     string   // when the state came: start, go, or none (created)
	resumed []string // the names of the connections resumed at start or with GO
	mu      sync.Mutex
	conns   []net.Conn
	stop    bool
	wg      sync.WaitGroup
}

func (lw *storeWorker) serve(conn net.Conn, name string) {
	lw.mu.Lock()
	lw.conns = append(lw.conns, conn)
	lw.mu.Unlock()
	lw.wg.Add(1)
	go func() {
		defer lw.wg.Done()
		r := bufio.NewReader(conn)
		for {
			line, err := r.ReadString('\n')
			if errors.Is(err, io.EOF) {
				lw.w.Status("hung up " + name)
			}
			if err != nil {
				return
			}
			lw.mu.Lock()
			if lw.stop {
				lw.mu.Unlock()
				return
			}
			switch strings.TrimSpace(line) {
			case "INC":
				var b [8]byte
				lw.state.ReadAt(b[:], 0)
				n := binary.LittleEndian.Uint64(b[:]) + 1
				binary.LittleEndian.PutUint64(b[:], n)
				lw.state.WriteAt(b[:], 0)
				fmt.Fprintf(conn, "%d %d\n", n, os.Getpid())
			case "STATE":
				fmt.Fprintf(conn, "%s %d\n", lw.got, os.Getpid())
			case "NAME":
				fmt.Fprintf(conn, "%s %d\n", name, os.Getpid())
			case "RESUMED":
				names := strings.Join(lw.resumed, ",")
				if names == "" {
					names = "-"
				}
				fmt.Fprintf(conn, "%s %d\n", names, os.Getpid())
			case "NOPOLL":
				lw.w.RemoveFD(name)
				if err := storeNoPoll(lw.notify, name, conn.(*net.TCPConn)); err != nil {
					fmt.Fprintln(os.Stderr, "live:", err)
				}
				fmt.Fprintf(conn, "nopoll %d\n", os.Getpid())
			case "BYE":
				lw.w.RemoveFD(name)
				conn.Close()
			case "DIE":
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
			lw.mu.Unlock()
		}
	}()
}

// stopServing stops reading: the next worker answers from now on.
func (lw *storeWorker) stopServing() {
	lw.mu.Lock()
	lw.stop = true
	for _, c := range lw.conns {
		c.SetReadDeadline(time.Unix(1, 0))
	}
	lw.mu.Unlock()
	lw.wg.Wait()
}

// storeNoPoll stores c under name with FDPOLL=0, which package handoff does
// not send: a raw FDSTORE=1 datagram, as a C worker would send it. It
// arrives after the worker's earlier messages: one socket receives them all.
func storeNoPoll(notifySocket, name string, c *net.TCPConn) error {
	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(sock)
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var sendErr error = unix.EINTR
	err = rc.Control(func(fd uintptr) {
		msg := "FDSTORE=1\nFDNAME=" + name + "\nFDPOLL=0"
		for sendErr == unix.EINTR { // the Go runtime signals its threads
			sendErr = unix.Sendmsg(sock, []byte(msg), unix.UnixRights(int(fd)), &unix.SockaddrUnix{Name: notifySocket}, 0)
		}
	})
	return errors.Join(err, sendErr)
}
