package handoff

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
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
//
// Until the drain, it is on every request's path and takes no lock: a
// handler count, and a map from each connection to its state that only the
// connection's own goroutine writes after adding it (sync.Map's case).
// With a lock shared by every connection, taken four times a request, the
// tracker took 2.6% of a trivial handler's CPU on two CPUs; now about 1%
// (test/bench/servehttp). Only once the drain began are changes timed and
// poked.
type connTracker struct {
	grace    time.Duration
	changed  chan struct{} // poked on every change once draining, capacity 1
	start    time.Time     // when the drain began; written before draining is set
	draining atomic.Bool
	handlers atomic.Int64
	conns    sync.Map // net.Conn → *connInfo
}

// connInfo is one connection's state. Its own goroutine writes state and
// since; the sweep reads them, and alone writes closing.
type connInfo struct {
	state   atomic.Int32 // an http.ConnState
	since   atomic.Int64 // the last change, as time since the drain began; 0 before it
	closing bool
}

func newConnTracker(grace time.Duration) *connTracker {
	return &connTracker{grace: grace, changed: make(chan struct{}, 1)}
}

func (t *connTracker) install(srv *http.Server, drain <-chan struct{}) {
	h := srv.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.handlers.Add(1)
		defer t.handlerDone()
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

func (t *connTracker) handlerDone() {
	t.handlers.Add(-1)
	t.changedNow()
}

func (t *connTracker) connState(c net.Conn, s http.ConnState) {
	switch s {
	case http.StateNew:
		ci := new(connInfo)
		t.set(ci, s)
		t.conns.Store(c, ci)
	case http.StateActive, http.StateIdle:
		if ci, ok := t.conns.Load(c); ok {
			t.set(ci.(*connInfo), s)
		}
	default: // hijacked or closed: no longer the server's
		t.conns.Delete(c)
	}
	t.changedNow()
}

// set records a connection's new state, and when it changed if the drain
// has begun. (A change that misses the start by a hair counts from the
// start, as every change before it does.)
func (t *connTracker) set(ci *connInfo, s http.ConnState) {
	if t.draining.Load() {
		ci.since.Store(int64(time.Since(t.start)))
	}
	ci.state.Store(int32(s))
}

// changedNow pokes the drain's wait, if it began. It is called after the
// change: either the wait's sweep, which follows begin, sees the change, or
// this sees draining and pokes.
func (t *connTracker) changedNow() {
	if !t.draining.Load() {
		return
	}
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

func (t *connTracker) begin() {
	t.start = time.Now()
	t.draining.Store(true)
}

// wait returns true once no connection and no handler is left, closing
// connections that stay idle past the grace period; false when ctx is done
// first.
func (t *connTracker) wait(ctx context.Context) bool {
	timer := time.NewTimer(t.grace)
	defer timer.Stop()
	for {
		next, done := t.sweep(time.Since(t.start))
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
// their last activity and the drain's start; now is the time since the
// start. It reports how long until the next one is due (0: none is waiting)
// and whether everything is finished.
func (t *connTracker) sweep(now time.Duration) (next time.Duration, done bool) {
	left := false
	t.conns.Range(func(k, v any) bool {
		left = true
		ci := v.(*connInfo)
		if http.ConnState(ci.state.Load()) == http.StateActive || ci.closing {
			return true
		}
		due := t.grace - (now - time.Duration(ci.since.Load()))
		if due <= 0 {
			ci.closing = true
			k.(net.Conn).Close() // its goroutine reports StateClosed
			return true
		}
		if next == 0 || due < next {
			next = due
		}
		return true
	})
	return next, !left && t.handlers.Load() == 0
}
