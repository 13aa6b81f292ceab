package handoff

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// drainIdle is how long ServeHTTP lets a connection stay idle after the
// drain began before closing it, when the server has no IdleTimeout.
const drainIdle = 5 * time.Second

// ServeHTTP serves srv on ln until drain is closed, then drains without
// losing a request, and returns nil once every connection is closed and
// every handler has returned. The drain:
//   - ln is closed: only this process's copy of the socket, so connections
//     queued in the kernel go to the next generation, which holds it too.
//   - A request whose handler starts after drain was closed is answered with
//     "Connection: close" (over HTTP/2, GOAWAY), so a keep-alive client opens
//     its next connection to the next generation instead of racing a close.
//   - A connection idle (or silent since accepted) for the grace period after
//     the drain began is closed: srv.IdleTimeout, or 5 seconds when it is 0.
//
// (http.Server.Shutdown closes idle keep-alive connections at once, racing
// the client's next request, and drops requests read after it began.)
//
// ctx bounds the drain, as it bounds Shutdown: once it is done, ServeHTTP
// closes every connection left (srv.Close) and returns ctx.Err(), before the
// drain too. A context, not a duration, so that the worker decides when the
// bound starts (a timer armed on the drain signal, a little under the
// supervisor's --drain-timeout, say) and what ends it early. With
// context.Background() only the supervisor's drain timeout bounds it.
//
// ServeHTTP wraps srv.Handler (http.DefaultServeMux when nil) and
// srv.ConnState; call it once per server. If Serve fails before the drain,
// ServeHTTP returns its error. A nil drain never closes. A handler that
// hijacks its connection should watch drain itself.
func ServeHTTP(ctx context.Context, srv *http.Server, ln net.Listener, drain <-chan struct{}) error {
	if ctx == nil || srv == nil || ln == nil {
		return errors.New("handoff: ServeHTTP needs a context, a server and a listener")
	}
	grace := srv.IdleTimeout
	if grace <= 0 {
		grace = drainIdle
	}
	t := newConnTracker(grace)
	t.install(srv, drain)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-drain:
	case <-ctx.Done():
		srv.Close()
		<-served
		return ctx.Err()
	}
	t.begin()
	ln.Close()
	<-served // Accept fails at once; every accepted conn is registered by now
	if !t.wait(ctx) {
		srv.Close()
		return ctx.Err()
	}
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

// wait returns true once no connection and no handler is left, closing
// connections that stay idle past the grace period; false when ctx is done
// first.
func (t *connTracker) wait(ctx context.Context) bool {
	timer := time.NewTimer(t.grace)
	defer timer.Stop()
	for {
		next, done := t.sweep(time.Now())
		if done {
			return true
		}
		if next > 0 {
			timer.Reset(next)
		}
		select {
		case <-t.changed:
		case <-timer.C:
		case <-ctx.Done():
			return false
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
