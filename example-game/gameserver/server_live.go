package main

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"time"
)

// liveStopWrite bounds the reply a --live session is writing when the
// server stops for a handover: past it, the reply is left to the notice.
const liveStopWrite = 200 * time.Millisecond

// maxReplyLen is the longest reply length a session record holds (16
// bits, region.go): a longer reply is recorded as this.
const maxReplyLen = 0xffff

// addLive serves a connection just accepted, in a session slot of the
// region, its connection queued to be stored in the supervisor's fd store
// as s<slot> (connStore): from then on a crash of this worker does not end
// it. Without a free slot it is served all the same, as a connection that
// a crash ends.
func (srv *server) addLive(conn net.Conn) {
	s := newSession(srv, conn, sessionRecord{})
	w := srv.game.world
	w.mu.Lock()
	slot, err := w.live.take()
	w.mu.Unlock()
	if err == nil {
		s.live, err = newLiveIO(conn, slot)
	}
	if err == nil && srv.storeConns {
		s.live.stored, s.live.inStore = srv.conns.add(s.live.name, conn), true
	}
	if err != nil {
		srv.log.Printf("live: a new connection is served, but a crash would end it: %v", err)
		if s.live != nil {
			w.mu.Lock()
			w.live.release(s.live.slot)
			w.mu.Unlock()
		}
		s.live = nil
	}
	srv.start(s)
}

// unstore takes a closing session's connection out of the fd store (so
// that the close reaches the client) and frees its slot.
func (srv *server) unstore(s *session) {
	if !s.live.inStore {
		// --live-conns=false: not stored
	} else if err := srv.conns.remove(s.live.name); err != nil {
		srv.log.Printf("live: removing %s from the fd store: %v", s.live.name, err)
	}
	w := srv.game.world
	w.mu.Lock()
	err := w.live.release(s.live.slot)
	w.mu.Unlock()
	if err != nil {
		srv.log.Printf("live: freeing session slot %d: %v", s.live.slot, err)
	}
}

// newResumed makes the session that a previous worker ran in slot on its
// stored connection conn, before its record is read (resumeLive).
func (srv *server) newResumed(conn net.Conn, slot int) (*session, error) {
	s := newSession(srv, conn, sessionRecord{})
	var err error
	if s.live, err = newLiveIO(conn, slot); err != nil {
		return nil, err
	}
	s.live.inStore = true
	s.live.posSet, s.live.settled = false, false // the record says, or its first line learns them
	return s, nil
}

// resumeLive serves again a session that a previous worker ran in slot,
// on its stored connection: logged in as it was, its mark (rec) settled
// first (session_live.go). restarted says the previous worker did not
// hand over (it died): the client is told, whatever happened. The world's
// lock must not be held. The caller starts the session (server.start) once
// every one is resumed: started, they would run their commands and contend
// for the world with the resuming of the others.
//
// s is the session made ahead for conn (newResumed), or nil.
func (srv *server) resumeLive(s *session, conn net.Conn, slot int, rec sessionRec, restarted bool) (*session, error) {
	if s == nil {
		var err error
		if s, err = srv.newResumed(conn, slot); err != nil {
			return nil, err
		}
	}
	switch rec.state {
	case markSettled:
		s.live.pos, s.live.outPos, s.live.posSet, s.live.settled = rec.pos, rec.outPos, true, true
	case markRead, markApplied:
		if err := s.live.positions(); err != nil {
			return nil, fmt.Errorf("live: session %s: %w", s.live.name, err)
		}
	}
	w := srv.game.world
	w.mu.Lock()
	if rec.player >= 0 && int(rec.player) < len(w.players) {
		s.player = w.players[rec.player].id
	}
	w.mu.Unlock()
	taken := rec.pos + uint64(rec.length) + 1
	if rec.state == markRead && s.live.pos != rec.pos && s.live.pos != taken {
		srv.log.Printf("live: session %s: marked at input position %d, the socket is at %d: the mark is dropped", s.live.name, rec.pos, s.live.pos)
		rec.state = markNone
	}
	if rec.state == markApplied {
		// Applied: the rest of its reply, as noted, if the socket did not
		// take all of it; the mark is cleared once that is written. The
		// record's length stops at maxReplyLen: a longer reply of which
		// the socket took that much or more is taken as cut short, as a
		// stop leaves it (a write that ends clears the mark before the
		// stop is seen; only a crash in between gets an empty line more).
		sent := s.live.outPos - min(s.live.outPos, rec.outPos)
		cut := sent < uint64(rec.replyLen) || rec.replyLen >= maxReplyLen && sent > 0
		if cut && rec.reply != nil {
			s.out = append(s.out, rec.reply[sent:]...)
		} else if cut {
			if sent > 0 {
				s.out = append(s.out, '\n') // ends the line cut short
			}
			s.reply(fmt.Sprintf(noticeApplied, rec.line), false)
		}
		s.live.marked = true
		// QUIT's reply: the connection closes once it is written, as it
		// would have in the previous worker.
		s.closing = bytes.Equal(rec.reply, []byte(replyBye+"\n"))
	}
	if restarted {
		s.unsettle() // the notice is written unmarked; a crash before unmark finds the record unsettled
		s.reply(noticeNothingLost, false)
	}
	if rec.state == markRead && s.live.pos == taken {
		// Taken from the socket and not applied: run it now, from the
		// record (a line longer than a record holds was no command).
		line := rec.line
		if rec.length > maxMarked {
			line = bytes.Repeat([]byte{'?'}, maxMarked)
		}
		s.live.marked = true
		s.runMarked(line, rec)
	}
	if len(s.out) > 0 {
		s.live.marked = true // the output is a command's, or unmarked: unmark settles it once written
	}
	if s.live.marked {
		w.mu.Lock()
		srv.busy[s] = struct{}{} // a freeze waits for it (begin)
		w.mu.Unlock()
	}
	return s, nil
}

// errFrozen is a --live session's refusal to begin a command once its
// server froze for a handover (freeze).
var errFrozen = errors.New("the server froze for a handover")

// begin counts s as in the middle of a command, from its mark until its
// reply is written (end); false once the server froze: the command is
// left in the socket, for the next worker. Call with the world's mu held.
func (srv *server) begin(s *session) bool {
	if srv.isStopping() {
		return false
	}
	srv.busy[s] = struct{}{}
	return true
}

// end counts s out of the sessions in the middle of a command. Call with
// the world's mu held.
func (srv *server) end(s *session) {
	delete(srv.busy, s)
	if srv.drained != nil && len(srv.busy) == 0 {
		close(srv.drained)
		srv.drained = nil
	}
}

// beginClose is begin for a --live session that ends: its connection is
// taken out of the fd store and its slot freed (unstore) before leave,
// unless the server froze: then its connection is the next worker's. A
// session that closes after its command (QUIT) is still counted in from
// that command (unmark does not end it), so a freeze waits for its close.
func (srv *server) beginClose(s *session) bool {
	w := srv.game.world
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := srv.busy[s]; ok {
		return true
	}
	return srv.begin(s)
}

// leave is end for a session whose goroutine returns (--live).
func (srv *server) leave(s *session) {
	if srv.conns == nil {
		return
	}
	w := srv.game.world
	w.mu.Lock()
	srv.end(s)
	w.mu.Unlock()
}

// freeze stops a --live server for a handover, and returns its sessions.
// Unlike stop, it wakes none of the sessions that wait for their client's
// next line, which is most of them: with the stop flag set under the
// world's lock, none of them begins a command again (begin), nor takes or
// writes anything, nor closes (stopped); the next worker finds their
// input in the socket. freeze waits only for the sessions in the middle of
// a command: each runs it, and a reply it was writing is let through for
// liveStopWrite; a reply not begun, or not done by then, is the next
// worker's to write, from the record (letting every one be written cost a
// closed loop of 10k clients, each with a command in flight, 150 to 450 ms
// of blackout). Sessions served without a slot (no room in the region) are
// stopped as stop does. Stopping 10k sessions one by one took 37 to 57 ms
// of a handover's blackout, on two CPUs. The server does not serve again.
// busy is how many --live sessions were in the middle of a command: only
// those can have left their record unsettled.
func (srv *server) freeze() (sessions []*session, busy int) {
	w := srv.game.world
	srv.mu.Lock()
	w.mu.Lock()
	deadline := time.Now().Add(liveStopWrite)
	srv.stopping.Store(true)
	for s := range srv.sessions {
		if s.live == nil {
			s.conn.SetDeadline(past)
			srv.busy[s] = struct{}{}
		} else if _, ok := srv.busy[s]; ok {
			s.conn.SetWriteDeadline(deadline) // the reply being written is let through, within a bound
			busy++
		}
	}
	var drained chan struct{}
	if len(srv.busy) > 0 {
		drained = make(chan struct{})
		srv.drained = drained
	}
	w.mu.Unlock()
	srv.mu.Unlock()
	srv.open() // held sessions, if any, write what they hold and stop
	if drained != nil {
		<-drained
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return slices.Collect(maps.Keys(srv.sessions)), busy
}
