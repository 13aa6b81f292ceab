package main

import (
	"errors"
	"log"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// server runs the sessions: one goroutine each, over the shared game.
type server struct {
	game     *game
	log      *log.Logger
	stopping atomic.Bool
	paused   atomic.Bool // accept returns on its listener's deadline
	conns    *connStore  // --live: the connections' side of the supervisor's live fd store; nil otherwise
	// storeConns: --live stores each new connection (not with --live-conns=false)
	storeConns bool

	mu       sync.Mutex
	sessions map[*session]struct{} // live, or stopped and kept
	wg       sync.WaitGroup        // session goroutines
	holding  bool                  // hold: start keeps new sessions in held until open
	held     []*session
	// gate is closed by open: the goroutines of the sessions made ahead
	// (prepare) wait for it, and then serve if they were started
	gate chan struct{}

	// --live, guarded by the world's mu: the sessions in the middle of a
	// command, from its mark until its reply is written (begin, end), and
	// a freeze's channel, closed when none is left (server_live.go)
	busy    map[*session]struct{}
	drained chan struct{}
}

func newServer(g *game, logger *log.Logger) *server {
	return &server{game: g, log: logger, sessions: make(map[*session]struct{}), gate: make(chan struct{}),
		busy: make(map[*session]struct{})}
}

func (srv *server) isStopping() bool { return srv.stopping.Load() }

// add starts serving conn, resuming st (the zero record for a new client).
func (srv *server) add(conn net.Conn, st sessionRecord) {
	srv.start(newSession(srv, conn, st))
}

// start serves s, on its own goroutine; while the server holds its
// sessions (hold), once it opens.
func (srv *server) start(s *session) {
	conn := s.conn
	srv.mu.Lock()
	defer srv.mu.Unlock()
	srv.sessions[s] = struct{}{}
	srv.wg.Add(1)
	if srv.isStopping() {
		conn.SetDeadline(past)
	}
	if srv.holding {
		srv.held = append(srv.held, s)
		return
	}
	go srv.serve(s)
}

// hold keeps the sessions started from now on from running until open. A
// worker that resumes thousands of sessions holds them until it has said
// READY=1: running at once, they would answer the commands their clients
// queued during the handover, and the goroutine starting the rest, and
// READY=1 after it, would wait behind all of those commands (10k queued
// commands delayed READY=1 by some 800 ms on two CPUs). Not even their
// goroutines are made before: each would wake the other CPU only to park
// at once, some 10 µs a session inside the blackout.
func (srv *server) hold() {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	srv.holding = true
}

// open runs the held sessions: those made ahead on their own goroutines,
// the others on new ones. The sessions made ahead and not started end.
func (srv *server) open() {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for _, s := range srv.held {
		if s.ahead {
			s.admitted = true
		} else {
			go srv.serve(s)
		}
	}
	srv.holding, srv.held = false, nil
	srv.openGate()
}

// prepare gives s, made ahead of the takeover (app.prepareSessions), its
// goroutine now, waiting until the server opens: it serves s then if s was
// started meanwhile (its record matched), else it ends. Made in the
// blackout, the goroutines would cost some 10 µs a session, in the middle
// of the takeover; made at open, after READY=1, 10k of them took 540 to
// 640 ms to start (the game's log, 1M players / 10k connections). Their
// stacks are not grown ahead to a session's size: that spared the stack
// copies at the sessions' first commands, yet delayed the reading of GO by
// 20 to 40 ms, at 1k and at 10k connections alike (not explained), which
// cost more than it saved.
func (srv *server) prepare(s *session) {
	s.ahead = true
	go func() {
		<-srv.gate
		if s.admitted {
			srv.serve(s)
		}
	}()
}

// dropAhead ends the goroutines of the sessions made ahead, when their
// server will not serve (the takeover failed): none was started.
func (srv *server) dropAhead() {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	srv.openGate()
}

// openGate closes gate, once. Call with mu held.
func (srv *server) openGate() {
	select {
	case <-srv.gate:
	default:
		close(srv.gate)
	}
}

// serve runs s on its goroutine, counted in wg, until it ends or stops.
func (srv *server) serve(s *session) {
	keep := s.run()
	if !keep && s.live != nil && !srv.beginClose(s) {
		keep = true // the server froze meanwhile: the connection is the next worker's
	}
	if keep {
		srv.leave(s)
		srv.wg.Done() // stopped: kept for the snapshot
		return
	}
	srv.mu.Lock()
	delete(srv.sessions, s)
	srv.mu.Unlock()
	if s.live != nil {
		srv.unstore(s) // before leave: a freeze waits for it
	}
	srv.leave(s)
	srv.wg.Done() // a stop need not wait for the close's linger
	s.close()
}

// acceptUntil serves new connections on ln, on its own goroutine, until
// the function it returns is called; that returns once no more are
// accepted. It leaves ln open, its deadline in the past, so that a
// handover that cannot save accepts on it again; a listener without
// deadlines is closed.
func (srv *server) acceptUntil(ln net.Listener) (stop func()) {
	dl, pausable := ln.(interface{ SetDeadline(time.Time) error })
	if pausable {
		dl.SetDeadline(time.Time{})
	}
	srv.paused.Store(false)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.accept(ln)
	}()
	return func() {
		srv.paused.Store(true)
		if !pausable || dl.SetDeadline(past) != nil {
			ln.Close()
		}
		<-done
	}
}

// accept serves new connections until ln is closed, or acceptUntil's stop
// has set its deadline.
func (srv *server) accept(ln net.Listener) error {
	var delay time.Duration
	for {
		conn, err := ln.Accept()
		if err == nil {
			delay = 0
			if srv.conns != nil {
				srv.addLive(conn)
			} else {
				srv.add(conn, sessionRecord{})
			}
			continue
		}
		if srv.isStopping() || srv.paused.Load() || errors.Is(err, net.ErrClosed) {
			return nil
		}
		// Out of fds or the like: back off and try again, as net/http does.
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		srv.log.Printf("accept: %v; retrying in %v", err, delay)
		time.Sleep(delay)
	}
}

// stop stops every session after its command in progress, waits for their
// goroutines, and returns the sessions left (in a stable order), each with
// what it read but did not process and what it did not write yet. Call it
// once no more connections are accepted. The sessions' I/O is stopped by
// deadlines in the past, so stop returns as soon as each goroutine has
// finished the command it was running. (A --live server freezes instead.)
func (srv *server) stop() []*session {
	srv.mu.Lock()
	srv.stopping.Store(true)
	for s := range srv.sessions {
		s.conn.SetDeadline(past)
	}
	srv.mu.Unlock()
	srv.open() // held sessions, their deadlines set, see the stop at once
	srv.wg.Wait()
	srv.mu.Lock()
	defer srv.mu.Unlock()
	kept := make([]*session, 0, len(srv.sessions))
	for s := range srv.sessions {
		s.remote = remoteAddr(s.conn)
		kept = append(kept, s)
	}
	slices.SortFunc(kept, func(a, b *session) int { return strings.Compare(a.remote, b.remote) })
	for i, s := range kept {
		s.name = "c" + strconv.FormatInt(int64(i), 36)
	}
	return kept
}

// resume serves the sessions that stop kept again, each where it stopped:
// the handover could not save, and this worker serves on.
func (srv *server) resume() {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	srv.stopping.Store(false)
	for s := range srv.sessions {
		s.conn.SetDeadline(time.Time{})
		srv.wg.Add(1)
		go srv.serve(s)
	}
}

// goodbye writes what each stopped session has not written yet, within
// bound, and closes it: the end of a session when there is no next worker
// to hand it to. Commands it had not run are not run, and get no reply.
func goodbye(sessions []*session, bound time.Duration) {
	deadline := time.Now().Add(bound)
	var wg sync.WaitGroup
	for _, s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.conn.SetWriteDeadline(deadline)
			s.conn.Write(s.out)
			hangUp(s.conn)
		}()
	}
	wg.Wait()
}
