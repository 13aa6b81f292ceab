package handoff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/procswitch/supervisor/internal/contract"
	"github.com/procswitch/supervisor/internal/fdbatch"
	"golang.org/x/sys/unix"
)

// Conn is a client connection with a name: the one a worker stores it
// under (State.HandOver), by which the next worker finds it (State.Resume),
// such as its session's id.
type Conn struct {
	Name string
	net.Conn
}

var (
	// ErrHandoverAborted means the supervisor closed the handover connection
	// before GO, or the drain signal came while State.Start waited for the
	// handover: the upgrade was called off, and this worker should exit.
	ErrHandoverAborted = errors.New("handoff: handover aborted by the supervisor")

	// ErrSaveFailed means that State.HandOver could not save the state in
	// handover mode (the error wraps the cause too, such as ENOSPC): it
	// stored no connection and told the supervisor (HANDOVER=failed), which
	// calls the upgrade off. The worker still owns its connections and
	// should resume serving them and accept again; the autosaves go on, and
	// Draining waits for the next drain signal.
	ErrSaveFailed = errors.New("handoff: the state could not be saved, so nothing was handed over: serve on")
)

// The handover steps that State takes. Package handoff/handover exports
// them, with their documentation, for a worker that takes them itself.

// handoverMode is handover.Enabled: SUPERVISOR_MODE is "handover".
func handoverMode() bool { return os.Getenv(contract.EnvMode) == contract.ModeHandover }

// snapshotPath is handover.SnapshotPath: SUPERVISOR_SNAPSHOT.
func snapshotPath() string { return os.Getenv(contract.EnvSnapshot) }

// awaitHandover is handover.Await.
func (w *Worker) awaitHandover(ctx context.Context) ([]Conn, error) {
	conns, pending, err := w.receiveHandover(ctx, nil)
	return append(conns, pending.wait()...), err
}

// receiveHandover is awaitHandover, except that on GO it returns before the
// fds received are all connections: pending.wait waits for the rest. The
// snapshot is committed by then, so the caller may restore meanwhile.
// prepare, when not nil, gets the connections passed at start before
// WAITING (State.Prepare).
func (w *Worker) receiveHandover(ctx context.Context, prepare func([]Conn)) (conns []Conn, pending *converter, err error) {
	pending = &converter{w: w, gone: map[string]bool{}}
	conns = w.passedConns()
	if prepare != nil {
		prepare(conns)
	}
	fdStr := os.Getenv(contract.EnvHandoverFD)
	if fdStr == "" {
		return conns, pending, nil
	}
	os.Unsetenv(contract.EnvHandoverFD)
	fd, err := strconv.Atoi(fdStr)
	if err != nil || fd < contract.ListenFDsStart {
		return conns, pending, fmt.Errorf("handoff: %s=%q is not an fd", contract.EnvHandoverFD, fdStr)
	}
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "handover")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return conns, pending, fmt.Errorf("handoff: handover connection: %w", err)
	}
	defer c.Close()
	uc := c.(*net.UnixConn)
	growFDTable(fd)
	if _, err := uc.Write([]byte(contract.HandoverWaiting)); err != nil {
		return conns, pending, fmt.Errorf("handoff: handover: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { uc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	err = receiveStore(uc, pending)
	if ctx.Err() != nil {
		closeConns(pending.wait())
		return conns, new(converter), ctx.Err()
	}
	if err == nil {
		w.mu.Lock()
		w.handedOver = !pending.crashed
		w.mu.Unlock()
		conns = dropGone(conns, pending.gone)
	}
	return conns, pending, err
}

// dropGone closes the connections passed at start that the supervisor's
// live fd store removed before GO (the previous worker closed them).
func dropGone(conns []Conn, gone map[string]bool) []Conn {
	if len(gone) == 0 {
		return conns
	}
	kept := conns[:0]
	for _, c := range conns {
		if gone[c.Name] {
			c.Conn.Close()
			continue
		}
		kept = append(kept, c)
	}
	return kept
}

// wasHandedOver is handover.HandedOver: awaitHandover got GO.
func (w *Worker) wasHandedOver() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.handedOver
}

// fdTableRoom is how many fds growFDTable makes room for, at most: the
// connections received and their net.Conns' duplicates. A power of two,
// the sizes the kernel's table takes.
const fdTableRoom = 1 << 16

// growFDTable grows this process's fd table now, while the previous worker
// still serves, by duplicating fd to a high number and closing it. The
// kernel grows a multithreaded process's table (doubling it) only after an
// RCU grace period, milliseconds each time: growing it from 64 entries to
// 2048 as a thousand connections arrive would add tens of milliseconds to
// the blackout. The table never shrinks; 64k entries take 512 KiB.
func growFDTable(fd int) {
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) != nil || lim.Cur < 2 {
		return
	}
	if high, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, int(min(lim.Cur, fdTableRoom)-1)); err == nil {
		unix.Close(high)
	}
}

// receiveStore reads "FDS name:…" messages until GO, handing their fds to
// cv to be made connections.
func receiveStore(uc *net.UnixConn, cv *converter) error {
	buf := make([]byte, 64*1024)
	oob := make([]byte, fdbatch.OOBSize())
	for {
		n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
		if errors.Is(err, io.EOF) || err == nil && n == 0 && oobn == 0 {
			return ErrHandoverAborted // the supervisor closed its end
		}
		if err != nil {
			return fmt.Errorf("handoff: handover: %w", err)
		}
		msg := string(buf[:n])
		if msg == contract.HandoverGo {
			return nil
		}
		if msg == contract.HandoverCrashed && oobn == 0 {
			cv.crashed = true // a standby promoted: the previous worker died
			continue
		}
		if names, ok := strings.CutPrefix(msg, contract.HandoverGoneKey); ok && oobn == 0 {
			for _, name := range strings.Split(names, ":") {
				cv.gone[name] = true
			}
			continue
		}
		fds, err := fdbatch.Rights(oob[:oobn])
		if err != nil {
			return fmt.Errorf("handoff: handover: %w", err)
		}
		names := strings.Split(strings.TrimPrefix(msg, contract.HandoverFDsKey), ":")
		for len(names) < len(fds) {
			names = append(names, "stored")
		}
		cv.add(fds, names)
	}
}

// converter turns received fds into connections, on as many goroutines as
// the process may run at once, while the next message is read: net.FileConn
// costs a dozen system calls per fd, and a thousand of them lie between the
// previous worker's save and this one's restore.
type converter struct {
	w     *Worker
	wg    sync.WaitGroup
	parts [][]Conn        // one per message, in order; nil Conn where conversion failed
	gone  map[string]bool // connections passed at start that the store no longer holds ("GONE")
	// crashed: the supervisor said CRASHED before GO (a standby promoted
	// after the worker died, or the old worker died before it saved): a
	// restart, not a handover
	crashed bool
}

// convertPerGoroutine is the fewest fds worth a goroutine of their own.
const convertPerGoroutine = 32

func (cv *converter) add(fds []int, names []string) {
	part := make([]Conn, len(fds))
	cv.parts = append(cv.parts, part)
	workers := max(1, min(runtime.GOMAXPROCS(0), len(fds)/convertPerGoroutine))
	for k := range workers {
		cv.wg.Add(1)
		go func() {
			defer cv.wg.Done()
			for i := k; i < len(fds); i += workers {
				c, kept, err := fdConn(fds[i], names[i])
				switch {
				case err == nil:
					part[i] = Conn{Name: names[i], Conn: c}
				case kept >= 0:
					cv.w.keepFile(kept, names[i]) // a memfd of state, say: File(name) takes it
				}
			}
		}()
	}
}

// wait returns the connections, in the order received, once every
// conversion has finished.
func (cv *converter) wait() []Conn {
	cv.wg.Wait()
	var conns []Conn
	for _, part := range cv.parts {
		for _, c := range part {
			if c.Conn != nil {
				conns = append(conns, c)
			}
		}
	}
	return conns
}

// fdConn turns a received fd into a net.Conn; the fd is consumed. An fd
// that is not a socket is returned as kept, a duplicate, with the error
// unix.ENOTSOCK. It is close-on-exec already: the net package receives with
// MSG_CMSG_CLOEXEC.
func fdConn(fd int, name string) (c net.Conn, kept int, err error) {
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	c, err = net.FileConn(f)
	if errors.Is(err, unix.ENOTSOCK) {
		if kept, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0); err == nil {
			return nil, kept, unix.ENOTSOCK
		}
	}
	return c, -1, err
}

// keepFile adds an fd received with the connections that is not a socket
// (the live fd store's memfd of state, say) to the passed fds, where
// File(name) finds it, as it would have on a cold start.
func (w *Worker) keepFile(fd int, name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.socks = append(w.socks, &socket{name: name, fd: fd, held: true})
}

// passedConns takes the passed fds that are connected stream sockets (not
// listening): the connections of a cold start in handover mode.
func (w *Worker) passedConns() []Conn {
	w.mu.Lock()
	defer w.mu.Unlock()
	var conns []Conn
	for _, s := range w.socks {
		if !s.held || s.kind != "" {
			continue
		}
		typ, err1 := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_TYPE)
		listening, err2 := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		if err1 != nil || err2 != nil || typ != unix.SOCK_STREAM || listening != 0 {
			continue
		}
		var c net.Conn
		if err := s.withFile(func(f *os.File) (err error) { c, err = net.FileConn(f); return err }); err != nil {
			continue
		}
		s.adopt("conn", c)
		conns = append(conns, Conn{Name: s.name, Conn: c})
	}
	return conns
}

func closeConns(conns []Conn) {
	for _, c := range conns {
		c.Close()
	}
}
