package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// A --live session never holds input that only it knows: it peeks at the
// socket (MSG_PEEK), marks the next line in its region record, and only
// then takes the line from the socket, runs it and commits its effect with
// the record (markApplied), writes the reply, and clears the mark. Killed
// at any instant, it leaves its successor enough to go on exactly:
//
//	no mark            nothing taken and not answered: the socket still
//	                   holds whatever the client sent
//	markRead           the line was marked; whether it was taken from the
//	                   socket, the stream's position says (TCP_INFO's bytes
//	                   received minus the bytes queued): if it was, the
//	                   successor runs it (it was not applied)
//	markApplied        applied, and the reply noted with where it begins in
//	                   the output: the successor writes what of it the
//	                   socket did not take (TCP_INFO's bytes acknowledged
//	                   plus the bytes queued say how much it did). A reply
//	                   too long to note is replaced by noticeApplied
//	markSettled        no command in progress, and the record says where
//	                   the input and the output stand: the successor goes
//	                   on from there without asking the kernel. Set when a
//	                   reply is written (unmark); taken back (unsettle)
//	                   before anything is taken or written unmarked
//
// So no command is lost and none runs twice.

// liveIO is a session's --live part.
type liveIO struct {
	slot    int
	name    string // "s<slot>": the connection's name in the fd store
	rc      syscall.RawConn
	pos     uint64 // bytes taken from the socket since the connection began
	outPos  uint64 // bytes written to it since the connection began
	posSet  bool   // pos and outPos are known; a resumed session learns them at its first line
	marked  bool   // a line is marked until its reply is written
	settled bool   // the record may say markSettled: unsettle before taking or writing unmarked
	// stored is closed once the connection is in the supervisor's fd store
	// (connStore.add): no command runs and no reply is written before;
	// nil once seen closed, or for a resumed session
	stored  <-chan struct{}
	inStore bool // the connection is in the fd store, or queued for it (connStore)
}

// The first line a resumed --live session gets after its worker was
// restarted (a crash, a rollback): never a reply, as no reply begins with
// "NOTICE ".
const (
	noticeNothingLost = "NOTICE restarted: nothing lost"
	noticeApplied     = "NOTICE restarted: your last command %q was applied, its reply may be lost; send STATUS to resync"
)

func slotName(slot int) string { return "s" + strconv.Itoa(slot) }

// testHookAwaitStore, when set by a test, is called when a new session has
// its first line and waits for its connection's store.
var testHookAwaitStore func()

// newLiveIO is the --live part of a session on conn in slot.
func newLiveIO(conn net.Conn, slot int) (*liveIO, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("live: a %T has no file descriptor", conn)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	return &liveIO{slot: slot, name: slotName(slot), rc: rc, posSet: true, settled: true}, nil // a new connection: nothing taken (liveRegion.take)
}

// positions learns how many bytes were taken from the socket since the
// connection began, and how many written to it, by whichever process:
// what the kernel received minus what it still queues for reading; what
// the peer acknowledged plus what the kernel still queues for sending. The
// counters (TCP_INFO) and the queues (SIOCINQ, SIOCOUTQ) are read by
// separate calls, between which data or an acknowledgment may arrive: the
// counters are read again after the queues, and all of it again until they
// did not move, else a reply's acknowledgment arriving in between made the
// output position short by that reply (which a crash then resent cut).
func (l *liveIO) positions() error {
	var err error
	cerr := l.rc.Control(func(fd uintptr) {
		for try := 0; ; try++ {
			var before, after *unix.TCPInfo
			var in, out int
			if before, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err != nil {
				return
			}
			if in, err = unix.IoctlGetInt(int(fd), unix.SIOCINQ); err != nil {
				return
			}
			if out, err = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ); err != nil {
				return
			}
			if after, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err != nil {
				return
			}
			if before.Bytes_received == after.Bytes_received && before.Bytes_acked == after.Bytes_acked {
				l.pos, l.outPos = after.Bytes_received-uint64(in), after.Bytes_acked+uint64(out)
				return
			}
			if try == maxPositionTries {
				err = errors.New("the connection's counters kept moving while read")
				return
			}
		}
	})
	if err = errors.Join(cerr, err); err == nil {
		l.posSet = true
	}
	return err
}

// maxPositionTries bounds positions' reads: each try takes microseconds,
// and a counter moves only when a segment arrives in between.
const maxPositionTries = 1000

// peek fills buf from r on with what the socket holds, without taking it:
// buf[:w] was peeked before and is still there. It waits until there is
// more than that (or the end of the input, or a deadline).
func (s *session) peek() error {
	if s.r > 0 {
		s.w = copy(s.buf, s.buf[s.r:s.w])
		s.r = 0
	}
	var n int
	var rerr error
	err := s.live.rc.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), s.buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		// Wait for more when nothing new came: a partial line.
		return rerr != unix.EAGAIN && !(rerr == nil && n == s.w && n > 0 && n < len(s.buf))
	})
	switch {
	case err != nil:
		return err
	case rerr != nil:
		return rerr
	case n == 0:
		return io.EOF
	}
	s.w = n
	return nil
}

// take takes n bytes, which peek saw, from the socket.
func (s *session) take(n int) error {
	for n > 0 {
		var got int
		var rerr error
		err := s.live.rc.Read(func(fd uintptr) bool {
			got, _, rerr = unix.Recvfrom(int(fd), s.buf[s.r:s.r+n], unix.MSG_DONTWAIT)
			return rerr != unix.EAGAIN
		})
		if err = errors.Join(err, rerr); err != nil {
			return err
		}
		if got == 0 {
			return io.EOF
		}
		n -= got
		s.live.pos += uint64(got)
	}
	return nil
}

// processLive runs the next complete line in buf, if there is one, marked
// in the region before it is taken from the socket; it reports whether it
// did anything. An error means the connection failed.
func (s *session) processLive() (bool, error) {
	in := s.buf[s.r:s.w]
	i := bytes.IndexByte(in, '\n')
	if i > maxLine || i < 0 && len(in) > maxLine {
		w := s.srv.game.world
		w.mu.Lock()
		ok := s.srv.begin(s)
		if ok {
			s.unsettleLocked() // taken and answered unmarked; unmark settles it again
		}
		w.mu.Unlock()
		if !ok {
			return false, errFrozen
		}
		s.live.marked = true
		s.reply("ERR line too long: at most 1024 bytes", true)
		return true, s.take(len(in))
	}
	if i < 0 {
		return false, nil
	}
	line := in[:i]
	if s.live.stored != nil {
		// A new connection: no command runs before a crash would keep the
		// connection (connStore). The store overlapped the wait for this line.
		if testHookAwaitStore != nil {
			testHookAwaitStore()
		}
		<-s.live.stored
		s.live.stored = nil
	}
	if !s.live.posSet {
		if err := s.live.positions(); err != nil {
			return false, err
		}
	}
	rec := sessionRec{used: true, state: markRead, pos: s.live.pos, length: len(line), line: line[:min(len(line), maxMarked)]}
	w := s.srv.game.world
	w.mu.Lock()
	if !s.srv.begin(s) {
		w.mu.Unlock()
		return false, errFrozen
	}
	rec.player = w.playerIndex(s.player)
	err := w.live.setSession(s.live.slot, rec)
	w.mu.Unlock()
	if err != nil {
		s.srv.log.Printf("live: marking a line of session %s: %v", s.live.name, err)
	}
	s.live.marked = true
	if err := s.take(i + 1); err != nil {
		return false, err
	}
	s.runMarked(line, rec)
	s.r += i + 1
	return true, nil
}

// runMarked runs a line marked as rec, committing its effect with the
// session's record in one transaction, and queues its reply.
func (s *session) runMarked(line []byte, rec sessionRec) {
	w := s.srv.game.world
	reply, quit := s.srv.game.execThen(&s.player, line, func(reply string) {
		rec.state, rec.outPos, rec.replyLen = markApplied, s.live.outPos+uint64(len(s.out)), len(reply)+1
		if rec.replyLen <= maxReply {
			rec.reply = append(append(rec.reply[:0], reply...), '\n')
		}
		if err := w.live.commit(w, rec, s.live.slot, s.player); err != nil {
			s.srv.log.Printf("live: committing session %s's command to the region: %v", s.live.name, err)
		}
	})
	s.reply(reply, quit)
}

// unmark clears the session's mark once its reply is written, and
// settles the record where the input and the output stand, when known.
func (s *session) unmark() {
	rec := sessionRec{used: true}
	if s.live.posSet {
		rec.state, rec.pos, rec.outPos = markSettled, s.live.pos, s.live.outPos
	}
	w := s.srv.game.world
	w.mu.Lock()
	rec.player = w.playerIndex(s.player)
	err := w.live.setSession(s.live.slot, rec)
	if !s.closing {
		s.srv.end(s) // a closing session ends at its close (server.beginClose)
	}
	w.mu.Unlock()
	if err != nil {
		s.srv.log.Printf("live: clearing session %s's mark: %v", s.live.name, err)
	}
	s.live.marked, s.live.settled = false, s.live.posSet
}

// unsettle takes a settled record back to markNone before the session
// takes or writes anything unmarked: killed after that, its successor asks
// the kernel where the connection stands. The next unmark settles it again.
func (s *session) unsettle() {
	w := s.srv.game.world
	w.mu.Lock()
	defer w.mu.Unlock()
	s.unsettleLocked()
}

// unsettleLocked is unsettle, with the world's mu held.
func (s *session) unsettleLocked() {
	if !s.live.settled {
		return
	}
	w := s.srv.game.world
	if err := w.live.setSession(s.live.slot, sessionRec{used: true, player: w.playerIndex(s.player)}); err != nil {
		s.srv.log.Printf("live: session %s's record: %v", s.live.name, err)
	}
	s.live.settled = false
}

// playerIndex is the index of the player called id, -1 for "". Call with
// mu held.
func (w *world) playerIndex(id string) int64 {
	if i, ok := w.index[id]; ok {
		return int64(i)
	}
	return -1
}
