package handoff

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/procswitch/supervisor/internal/contract"
	"golang.org/x/sys/unix"
)

// Limits of one FDSTORE=1 datagram.
const (
	// maxStoreFDs is the kernel's SCM_MAX_FD: the most fds one message carries.
	maxStoreFDs = 253
	// maxStoreMessage is the longest notify datagram systemd reads
	// (NOTIFY_BUFFER_MAX), and the supervisor with it.
	maxStoreMessage = 4096
	// maxFDName is the longest FDNAME systemd accepts (FDNAME_MAX).
	maxFDName = 255
)

// storeConn is handover.StoreConn.
func (w *Worker) storeConn(name string, c syscall.Conn) error {
	if err := checkFDName(name); err != nil {
		return err
	}
	return w.store([]storeEntry{{name: name, conn: c}})
}

// storeConns is handover.StoreConns: many connections to a datagram, up to
// 253 fds and 4096 bytes. A datagram whose connections share one name is
// systemd's FDSTORE=1 with that FDNAME; otherwise FDNAME lists one name per
// fd, colon-separated (the package doc's "Storing connections").
func (w *Worker) storeConns(conns []Conn) error {
	entries := make([]storeEntry, len(conns))
	for i, c := range conns {
		if err := checkFDName(c.Name); err != nil {
			return err
		}
		sc, ok := c.Conn.(syscall.Conn)
		if !ok {
			return fmt.Errorf("handoff: store %s: a %T has no file descriptor", c.Name, c.Conn)
		}
		entries[i] = storeEntry{name: c.Name, conn: sc}
	}
	return w.store(entries)
}

func checkFDName(name string) error {
	if name == "" || len(name) > maxFDName || strings.ContainsAny(name, ": \t\n\r\x00") {
		return fmt.Errorf("handoff: store %q: a name must be 1 to %d bytes, without ':' or whitespace", name, maxFDName)
	}
	return nil
}

type storeEntry struct {
	name string
	conn syscall.Conn
}

// store sends entries in datagrams of at most maxStoreFDs fds and
// maxStoreMessage bytes.
func (w *Worker) store(entries []storeEntry) error {
	if w.notifyAddr == "" {
		return errors.New("handoff: store: not supervised (no NOTIFY_SOCKET)")
	}
	var skipped []error
	for len(entries) > 0 {
		n, size := 0, len(contract.MsgFDStore)+1+len(contract.MsgFDNameKey)
		for n < len(entries) && n < maxStoreFDs && size+len(entries[n].name)+1 <= maxStoreMessage {
			size += len(entries[n].name) + 1
			n++
		}
		b := &storeBatch{w: w, entries: entries[:n]}
		entries = entries[n:]
		err := b.hold(0, make([]int, 0, n), make([]string, 0, n))
		skipped = append(skipped, b.skipped...)
		if err != nil {
			return errors.Join(append(skipped, err)...)
		}
	}
	return errors.Join(skipped...)
}

// storeBatch is one datagram's worth of connections.
type storeBatch struct {
	w       *Worker
	entries []storeEntry
	skipped []error // connections that were closed
}

// hold takes the fd of each entry from i on, keeping it open (within its
// conn's SyscallConn().Control) until the datagram carrying it is sent: no
// duplicate is needed, and none can be closed under the send.
func (b *storeBatch) hold(i int, fds []int, names []string) error {
	if i == len(b.entries) {
		return b.send(fds, names)
	}
	e := b.entries[i]
	rc, err := e.conn.SyscallConn()
	if err != nil {
		b.skipped = append(b.skipped, fmt.Errorf("handoff: store %s: %w", e.name, err))
		return b.hold(i+1, fds, names)
	}
	var sendErr error
	ctlErr := rc.Control(func(fd uintptr) {
		sendErr = b.hold(i+1, append(fds, int(fd)), append(names, e.name))
	})
	if ctlErr != nil { // closed: the callback did not run
		b.skipped = append(b.skipped, fmt.Errorf("handoff: store %s: %w", e.name, ctlErr))
		return b.hold(i+1, fds, names)
	}
	return sendErr
}

func (b *storeBatch) send(fds []int, names []string) error {
	if len(fds) == 0 {
		return nil
	}
	name := names[0]
	for _, n := range names[1:] {
		if n != name {
			name = strings.Join(names, ":")
			break
		}
	}
	if err := b.w.notifyWithFDs(contract.MsgFDStore+"\n"+contract.MsgFDNameKey+name, fds...); err != nil {
		if len(fds) == 1 {
			return fmt.Errorf("handoff: store %s: %w", names[0], err)
		}
		return fmt.Errorf("handoff: store %d connections (%s, ...): %w", len(fds), names[0], err)
	}
	return nil
}

// handoverSaved is handover.Saved: HANDOVER=saved, then a barrier, so that
// the worker's exit cannot overtake a stored connection.
func (w *Worker) handoverSaved() error {
	if err := w.notify(contract.MsgHandoverSaved); err != nil {
		return err
	}
	return w.barrier(notifyTimeout)
}

// handoverFailed is handover.Failed: Draining is re-armed first, so that
// no drain signal sent once the supervisor has read the message is missed.
func (w *Worker) handoverFailed(reason string) error {
	w.undrain()
	return w.notify(contract.MsgHandoverFailed + "\n" + contract.MsgHandoverErrorKey + oneLine(reason, contract.MaxHandoverError))
}

// oneLine makes s a value for a notify line: control characters (newlines,
// NULs) become spaces, runs of white space one space, and it is cut to at
// most limit bytes, on a character's boundary, marked by "...".
func oneLine(s string, limit int) string {
	s = strings.Join(strings.Fields(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "?"))), " ")
	if len(s) <= limit {
		return s
	}
	cut := limit - len("...")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// barrier is handover.Barrier, sd_notify_barrier(3): it sends BARRIER=1
// with the write end of a pipe, which the supervisor (or systemd) closes once
// it got there. A no-op returning nil when not supervised.
func (w *Worker) barrier(timeout time.Duration) error {
	if w.notifyAddr == "" {
		return nil
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("handoff: barrier: %w", err)
	}
	defer unix.Close(p[0])
	err := w.notifyWithFDs("BARRIER=1", p[1])
	unix.Close(p[1])
	if err != nil {
		return fmt.Errorf("handoff: barrier: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for {
		pfd := []unix.PollFd{{Fd: int32(p[0])}} // POLLHUP is always reported
		n, err := unix.Poll(pfd, int(time.Until(deadline).Milliseconds())+1)
		switch {
		case err == unix.EINTR:
		case err != nil:
			return fmt.Errorf("handoff: barrier: %w", err)
		case n > 0:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("handoff: barrier: the supervisor did not process it within %v", timeout)
		}
	}
}

// notifyWithFDs sends one notify datagram with fds attached. It reuses one
// socket, since a handover stores thousands of connections; a send blocks at
// most notifyTimeout when the supervisor's queue is full.
func (w *Worker) notifyWithFDs(msg string, fds ...int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.storeFD <= 0 {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		tv := unix.NsecToTimeval(notifyTimeout.Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
			unix.Close(fd)
			return err
		}
		w.storeFD = fd
	}
	for {
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		err := unix.Sendmsg(w.storeFD, []byte(msg), oob, &unix.SockaddrUnix{Name: w.notifyAddr}, 0)
		// A send with SO_SNDTIMEO is not restarted after a signal (signal(7)),
		// and the Go runtime signals its threads (preemption): try again.
		if err != unix.EINTR {
			return err
		}
	}
}
