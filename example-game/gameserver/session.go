package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"time"
)

const (
	// maxLine is the longest command line, not counting its "\n". A longer
	// one is answered with an error and its connection closed.
	maxLine = 1024
	// readBufferSize holds a longest line and more: pipelined commands are
	// read in one go.
	readBufferSize = 2 * maxLine
	// writeTimeout bounds one reply's write: a client that stops reading for
	// that long is closed.
	writeTimeout = 30 * time.Second
	// lingerTime and lingerBytes bound how long and how much input is
	// discarded when the server closes a connection (after QUIT, or a line
	// too long): closing a socket with unread input makes the kernel send a
	// reset, which can destroy the last reply before the client reads it.
	lingerTime  = time.Second
	lingerBytes = 64 << 10
)

// noticeRestarted is the line that a session resumed by a cold start (a
// rollback, a crash restart) gets, after the replies the previous worker
// had not written and before any other: whatever was done after the
// snapshot was taken is lost, a command's effect and its reply included.
// It is not a reply: no reply begins with "NOTICE ".
const noticeRestarted = "NOTICE restarted: your last command may not have been applied; send STATUS to resync"

// past is a deadline that has passed: set on a connection, it unblocks the
// read or write in progress at once.
var past = time.Unix(1, 0)

// session is one client connection. Its goroutine owns every field; after
// the server has stopped it (and waited for the goroutine), the fields are
// what the snapshot records so that the next worker resumes it exactly.
type session struct {
	srv     *server
	conn    net.Conn
	player  string // logged in as; "" before LOGIN
	buf     []byte // buf[r:w] was read and not yet processed
	r, w    int
	out     []byte  // replies not yet written
	closing bool    // close once out is written: after QUIT, or a line too long
	name    string  // under which it is handed over
	remote  string  // the peer's address, noted when the server stops
	live    *liveIO // --live (session_live.go); nil otherwise
	// ahead: made before the takeover, its goroutine waiting for the
	// server to open (server.prepare); admitted: started, so it serves then
	// (set by open, under the server's mu, before the gate closes)
	ahead, admitted bool
}

func newSession(srv *server, conn net.Conn, st sessionRecord) *session {
	s := &session{srv: srv, conn: conn, player: st.player, closing: st.closing}
	s.buf = make([]byte, max(readBufferSize, len(st.in)+maxLine))
	s.w = copy(s.buf, st.in)
	s.out = append(s.out, st.out...)
	return s
}

// record is what the snapshot keeps of a session the server stopped.
func (s *session) record() sessionRecord {
	return sessionRecord{
		name: s.name, remote: s.remote, player: s.player,
		in: s.buf[s.r:s.w], out: s.out, closing: s.closing,
	}
}

// run serves the session until it ends (false: the client left, or
// misbehaved, and the connection is to be closed) or the server stops it
// (true: keep the connection and the session's state for the next worker).
// A reply is written before more input is read, and the server's stop is
// checked before each command: the command in progress is finished, the
// ones after it stay unprocessed in buf.
func (s *session) run() (keep bool) {
	for {
		if len(s.out) > 0 {
			if err := s.flush(); err != nil {
				return s.stopped(err)
			}
		}
		if s.live != nil && s.live.marked {
			s.unmark()
		}
		switch {
		case s.closing:
			return false
		case s.srv.isStopping():
			return true
		case s.live != nil:
			if did, err := s.processLive(); err != nil {
				return s.stopped(err)
			} else if did {
				continue
			}
			if err := s.peek(); err != nil {
				return s.stopped(err)
			}
			continue
		case s.process():
			continue
		}
		if err := s.fill(); err != nil {
			return s.stopped(err)
		}
	}
}

// stopped tells an I/O error that the server's stop caused (a deadline in
// the past) from a client that left. Once a --live server froze (freeze),
// a session keeps its connection whatever happens: it is the next
// worker's, in the supervisor's fd store.
func (s *session) stopped(err error) bool {
	if s.live != nil && s.srv.isStopping() {
		return true
	}
	return s.srv.isStopping() && errors.Is(err, os.ErrDeadlineExceeded)
}

// process runs the complete lines in buf, appending their replies to out,
// and reports whether it did anything. It stops after the first command
// once the server is stopping.
func (s *session) process() bool {
	did := false
	for !s.closing {
		in := s.buf[s.r:s.w]
		i := bytes.IndexByte(in, '\n')
		if i > maxLine || i < 0 && len(in) > maxLine {
			s.reply("ERR line too long: at most 1024 bytes", true)
			s.r = s.w
			return true
		}
		if i < 0 {
			break
		}
		reply, quit := s.srv.game.exec(&s.player, in[:i])
		s.r += i + 1
		s.reply(reply, quit)
		did = true
		if s.srv.isStopping() {
			break
		}
	}
	return did
}

// close ends the connection (hangUp). When the server ends the session
// (closing), it first sends its FIN and discards what the client still
// sends, within bounds, so that the last reply arrives.
func (s *session) close() {
	if tc, ok := s.conn.(*net.TCPConn); ok && s.closing {
		tc.CloseWrite()
		tc.SetReadDeadline(time.Now().Add(lingerTime))
		if s.srv.isStopping() {
			tc.SetReadDeadline(past)
		}
		io.CopyN(io.Discard, tc, lingerBytes)
	}
	hangUp(s.conn)
}

// hangUp ends c's TCP connection both ways, shutdown(2), then closes c:
// close(2) alone does not end a connection while another process holds a
// copy of its socket, as the supervisor does of every handed-over
// connection during probation.
func hangUp(c net.Conn) {
	if hc, ok := c.(interface {
		CloseRead() error
		CloseWrite() error
	}); ok {
		hc.CloseWrite()
		hc.CloseRead()
	}
	c.Close()
}

func (s *session) reply(line string, close bool) {
	s.out = append(append(s.out, line...), '\n')
	s.closing = s.closing || close
}

// fill reads more input after what buf holds.
func (s *session) fill() error {
	if s.r > 0 {
		s.w = copy(s.buf, s.buf[s.r:s.w])
		s.r = 0
	}
	n, err := s.conn.Read(s.buf[s.w:])
	s.w += n
	if n > 0 {
		return nil
	}
	return err
}

// flush writes out. What a write could not send (the server stopped it, by
// a deadline in the past) stays in out, for the snapshot.
func (s *session) flush() error {
	if s.live != nil && s.live.stored != nil {
		<-s.live.stored // no reply before a crash would keep the connection (an error's, with no command)
		s.live.stored = nil
	}
	s.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	if s.srv.isStopping() {
		// The stop may have set its deadline before ours: set it again. A
		// reply not begun when the server stops is the next worker's to
		// write (--live: from the record; else from the snapshot).
		s.conn.SetWriteDeadline(past)
	}
	n, err := s.conn.Write(s.out)
	if s.live != nil {
		s.live.outPos += uint64(n)
	}
	s.out = s.out[:copy(s.out, s.out[n:])]
	return err
}

// remoteAddr is c's peer address, "" when unknown: a connection received
// from the supervisor after its peer left has none.
func remoteAddr(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}
