package handoff

import (
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// DefaultDrainIdle is how long ServeHTTP lets a connection stay idle after
// the drain began before closing it, when the server has no IdleTimeout.
const DefaultDrainIdle = 5 * time.Second

// ServeHTTP serves srv on ln until drain is closed, then drains without
// losing a request, and returns nil once every connection is closed and every
// handler has returned.
//
// The drain:
//   - ln is closed: only this process's copy of the socket, so connections
//     still queued in the kernel are accepted by the next generation, which
//     holds the same socket. A connection accepted just before is served.
//   - A request whose handler starts after drain was closed is answered with
//     "Connection: close", so a keep-alive client opens its next connection
//     (to the next generation) instead of racing a close. Idle connections
//     are not closed at once: their next request gets that answer.
//   - A connection that stays idle (or, accepted, sends nothing) for the
//     grace period after the drain began is closed: srv.IdleTimeout, or
//     DefaultDrainIdle when that is 0.
//   - Handlers run to their end; there is no overall deadline (the
//     supervisor's drain timeout is it). A handler that hijacks its
//     connection should watch drain itself.
//
// http.Server.Shutdown, by contrast, closes idle keep-alive connections at
// once (as does SetKeepAlivesEnabled(false)), racing the client's next
// request, and drops requests read after it began: both lose requests to
// clients that do not retry. ServeHTTP closes a connection only after the
// client has left it idle for the grace period. Over HTTP/2 the
// "Connection: close" answer makes the server send GOAWAY.
//
// ServeHTTP sets srv.Handler (http.DefaultServeMux when nil) and
// srv.ConnState to wrappers that call the ones given; call it once per
// server. If Serve fails before the drain, ServeHTTP returns its error
// (http.ErrServerClosed after srv.Shutdown or srv.Close). A nil drain never
// closes.
func ServeHTTP(srv *http.Server, ln net.Listener, drain <-chan struct{}) error {
	if srv == nil || ln == nil {
		return errors.New("handoff: ServeHTTP needs a server and a listener")
	}
	grace := srv.IdleTimeout
	if grace <= 0 {
		grace = DefaultDrainIdle
	}
	t := newConnTracker(grace)
	t.install(srv, drain)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-drain:
	}
	t.begin()
	ln.Close()
	<-served // Accept fails at once; every accepted conn is registered by now
	t.wait()
	return nil
}

// connTracker follows connections through ConnState and handlers through a
// wrapper, and after the drain began closes connections idle too long.
type connTracker struct {
	grace   time.Duration
	changed chan struct{} // poked on every change, capacity 1

	mu       sync.Mutex
	conns    map[net.Conn]*connInfo
	handlers int
	start    time.Time // when the drain began; zero before
}

type connInfo struct {
	state   http.ConnState
	since   time.Time
	closing bool
}

func newConnTracker(grace time.Duration) *connTracker {
	return &connTracker{
		grace:   grace,
		changed: make(chan struct{}, 1),
		conns:   make(map[net.Conn]*connInfo),
	}
}

func (t *connTracker) install(srv *http.Server, drain <-chan struct{}) {
	h := srv.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.handler(+1)
		defer t.handler(-1)
		select {
		case <-drain:
			w.Header().Set("Connection", "close")
		default:
		}
		h.ServeHTTP(w, r)
	})
	hook := srv.ConnState
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		t.connState(c, s)
		if hook != nil {
			hook(c, s)
		}
	}
}

func (t *connTracker) handler(delta int) {
	t.mu.Lock()
	t.handlers += delta
	t.mu.Unlock()
	t.poke()
}

func (t *connTracker) connState(c net.Conn, s http.ConnState) {
	t.mu.Lock()
	switch s {
	case http.StateNew, http.StateActive, http.StateIdle:
		t.conns[c] = &connInfo{state: s, since: time.Now()}
	default: // hijacked or closed: no longer the server's
		delete(t.conns, c)
	}
	t.mu.Unlock()
	t.poke()
}

func (t *connTracker) poke() {
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

func (t *connTracker) begin() {
	t.mu.Lock()
	t.start = time.Now()
	t.mu.Unlock()
}

// wait returns once no connection and no handler is left, closing
// connections that stay idle past the grace period.
func (t *connTracker) wait() {
	timer := time.NewTimer(t.grace)
	defer timer.Stop()
	for {
		next, done := t.sweep(time.Now())
		if done {
			return
		}
		if next > 0 {
			timer.Reset(next)
		}
		select {
		case <-t.changed:
		case <-timer.C:
		}
	}
}

// sweep closes the connections idle for the grace period since the later of
// their last activity and the drain's start. It reports how long until the
// next one is due (0: none is waiting) and whether everything is finished.
func (t *connTracker) sweep(now time.Time) (next time.Duration, done bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.conns) == 0 && t.handlers == 0 {
		return 0, true
	}
	for c, ci := range t.conns {
		if ci.state == http.StateActive || ci.closing {
			continue
		}
		since := ci.since
		if since.Before(t.start) {
			since = t.start
		}
		left := t.grace - now.Sub(since)
		if left <= 0 {
			ci.closing = true
			c.Close() // its serve goroutine reports StateClosed
			continue
		}
		if next == 0 || left < next {
			next = left
		}
	}
	return next, false
}
