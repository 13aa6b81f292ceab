// Package loadgen is a load generator for end-to-end tests and benchmarks of
// services run under the supervisor.
//
// It never retries. Go's http.Transport silently retries idempotent requests
// that fail on a reused connection, which hides exactly the losses an upgrade
// test must see, so loadgen speaks HTTP/1.1 itself over a net.Conn, one request
// at a time per connection, and records every request with its outcome.
//
// Two client modes: NewConn opens a connection for each request (and asks the
// server to close it); KeepAlive reuses one connection per client and reopens
// it only after a response that says "Connection: close", which counts as a
// normal end of that connection, not an error.
//
// Every request goes to Config.URL, or to the path and query that
// Config.Next gives for it, for a mix of requests.
package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Mode says how a client uses connections.
type Mode int

const (
	NewConn   Mode = iota // a new connection for every request
	KeepAlive             // one connection reused until the server closes it
)

func (m Mode) String() string {
	if m == KeepAlive {
		return "keep-alive"
	}
	return "new-conn"
}

// DefaultTimeout bounds a request (connect, write, response and body) when
// Config.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// Config describes a load run.
type Config struct {
	// URL is the target, "http://HOST:PORT/PATH?QUERY".
	URL string
	// Next, when set, gives the path and query of each request in place of
	// URL's, such as "/path?from=1,2&to=3,4"; URL then names only the host.
	// It is called on the client's own goroutine before each of its
	// requests, seq counting them from 0, so state kept per client needs no
	// lock. Nil means every request goes to URL.
	Next func(client, seq int) string
	// Mode is NewConn (the zero value) or KeepAlive.
	Mode Mode
	// Clients is the number of concurrent clients; 0 means 1.
	Clients int
	// Duration ends the run on its own; 0 means run until Stop or until the
	// context passed to Start is done.
	Duration time.Duration
	// Timeout bounds each request; 0 means DefaultTimeout.
	Timeout time.Duration
	// Pause is how long each client waits between its requests; 0 means none.
	Pause time.Duration
	// OKStatus says which status codes count as success; nil means 200 only.
	OKStatus func(code int) bool
}

// Run is a load run under way.
type Run struct {
	cfg    Config
	target target
	stop   chan struct{}
	once   sync.Once
	done   chan struct{}
	start  time.Time

	mu      sync.Mutex
	records []Record
	end     time.Time
	waiters []waiter
}

// waiter is a caller of Await.
type waiter struct {
	n    int
	done chan struct{}
}

// Start starts cfg.Clients clients. They stop at cfg.Duration, on Stop, or
// when ctx is done; a request under way is always finished (within its
// timeout) and recorded.
func Start(ctx context.Context, cfg Config) (*Run, error) {
	tg, err := parseTarget(cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.Clients <= 0 {
		cfg.Clients = 1
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.OKStatus == nil {
		cfg.OKStatus = func(code int) bool { return code == http.StatusOK }
	}
	r := &Run{cfg: cfg, target: tg, stop: make(chan struct{}), done: make(chan struct{}), start: time.Now()}
	var wg sync.WaitGroup
	for i := 0; i < cfg.Clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.client(i)
		}()
	}
	go func() {
		var timer <-chan time.Time
		if cfg.Duration > 0 {
			t := time.NewTimer(cfg.Duration)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-ctx.Done():
		case <-timer:
		case <-r.stop:
		}
		r.once.Do(func() { close(r.stop) })
		wg.Wait()
		r.mu.Lock()
		r.end = time.Now()
		r.mu.Unlock()
		close(r.done)
	}()
	return r, nil
}

// Stop asks the clients to stop, waits for the requests under way to finish
// (each is bounded by the request timeout) and returns the result.
func (r *Run) Stop() *Result {
	r.once.Do(func() { close(r.stop) })
	return r.Wait()
}

// Wait waits for the run to end and returns the result.
func (r *Run) Wait() *Result {
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	return &Result{Start: r.start, End: r.end, Records: append([]Record(nil), r.records...)}
}

// Done is closed when the run has ended.
func (r *Run) Done() <-chan struct{} { return r.done }

// Snapshot returns the requests recorded so far.
func (r *Run) Snapshot() *Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	return &Result{Start: r.start, End: time.Now(), Records: append([]Record(nil), r.records...)}
}

// Len is the number of requests recorded so far.
func (r *Run) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.records)
}

// Await waits until at least n requests have been recorded, and reports
// whether they were: false when d passed first or the run ended short of n.
func (r *Run) Await(n int, d time.Duration) bool {
	r.mu.Lock()
	if len(r.records) >= n {
		r.mu.Unlock()
		return true
	}
	w := waiter{n: n, done: make(chan struct{})}
	r.waiters = append(r.waiters, w)
	r.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-w.done:
		return true
	case <-t.C:
	case <-r.done:
	}
	return r.Len() >= n
}

func (r *Run) record(rec Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec)
	keep := r.waiters[:0]
	for _, w := range r.waiters {
		if len(r.records) >= w.n {
			close(w.done)
		} else {
			keep = append(keep, w)
		}
	}
	r.waiters = keep
}

func (r *Run) stopped() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

func (r *Run) client(id int) {
	var c *conn
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for seq := 0; !r.stopped(); seq++ {
		reuse := r.cfg.Mode == KeepAlive && c != nil
		if !reuse && c != nil {
			c.Close()
			c = nil
		}
		uri := r.target.uri
		if r.cfg.Next != nil {
			uri = r.cfg.Next(id, seq)
		}
		rec, next := r.target.do(c, uri, r.cfg.Mode, r.cfg.Timeout, r.cfg.OKStatus)
		rec.Client = id
		r.record(rec)
		c = next
		if r.cfg.Pause > 0 {
			t := time.NewTimer(r.cfg.Pause)
			select {
			case <-t.C:
			case <-r.stop:
			}
			t.Stop()
		}
	}
}

// Get sends one request on a new connection, without retrying, and returns its
// record. A zero timeout means DefaultTimeout; a 200 status is success.
func Get(rawURL string, timeout time.Duration) (Record, error) {
	tg, err := parseTarget(rawURL)
	if err != nil {
		return Record{}, err
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	rec, c := tg.do(nil, tg.uri, NewConn, timeout, func(code int) bool { return code == http.StatusOK })
	if c != nil {
		c.Close()
	}
	return rec, nil
}

type target struct {
	addr string // host:port to dial
	host string // the Host header
	uri  string // the URL's path and query
}

func parseTarget(rawURL string) (target, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return target{}, fmt.Errorf("loadgen: %w", err)
	}
	if u.Scheme != "http" || u.Host == "" {
		return target{}, fmt.Errorf("loadgen: want an http://HOST:PORT/... URL, got %q", rawURL)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	return target{addr: addr, host: u.Host, uri: u.RequestURI()}, nil
}

// request is the request for uri: in NewConn mode, it asks the server to
// close the connection.
func (tg target) request(uri string, mode Mode) []byte {
	b := make([]byte, 0, 96+len(uri)+len(tg.host))
	b = append(b, "GET "...)
	b = append(b, uri...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, tg.host...)
	b = append(b, "\r\nUser-Agent: loadgen\r\n"...)
	if mode != KeepAlive {
		b = append(b, "Connection: close\r\n"...)
	}
	return append(b, "\r\n"...)
}

// conn is a client connection and its reader; read counts the bytes received
// for the current response, to tell an empty reply from a truncated one.
type conn struct {
	net.Conn
	br   *bufio.Reader
	read int
}

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read += n
	return n, err
}

// do sends one request for uri on c (or on a new connection when c is nil)
// and returns its record and the connection to reuse, if any.
func (tg target) do(c *conn, uri string, mode Mode, timeout time.Duration, ok func(int) bool) (Record, *conn) {
	rec := Record{Start: time.Now(), Reused: c != nil}
	deadline := rec.Start.Add(timeout)
	finish := func(class Class, err error) (Record, *conn) {
		rec.Latency = time.Since(rec.Start)
		rec.Class, rec.Err = class, err
		if class != OK && c != nil {
			c.Close()
			c = nil
		}
		return rec, c
	}
	if c == nil {
		d := net.Dialer{Deadline: deadline}
		nc, err := d.Dial("tcp", tg.addr)
		if err != nil {
			return finish(classifyDial(err), err)
		}
		c = &conn{Conn: nc}
		c.br = bufio.NewReader(c)
	}
	c.read = 0
	if err := c.SetDeadline(deadline); err != nil {
		return finish(ConnOther, err)
	}
	if _, err := c.Write(tg.request(uri, mode)); err != nil {
		return finish(classifyIO(err, 0), err)
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return finish(classifyIO(err, c.read), err)
	}
	rec.Status = resp.StatusCode
	rec.PID, _ = strconv.Atoi(resp.Header.Get("X-Worker-Pid"))
	rec.Version = resp.Header.Get("X-Worker-Version")
	rec.Closed = resp.Close
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return finish(classifyIO(err, c.read), err)
	}
	if !ok(resp.StatusCode) {
		return finish(BadStatus, fmt.Errorf("loadgen: status %s for %s", resp.Status, uri))
	}
	if mode != KeepAlive || resp.Close {
		c.Close()
		c = nil
	}
	return finish(OK, nil)
}

func classifyDial(err error) Class {
	switch {
	case isTimeout(err):
		return Timeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return ConnRefused
	default:
		return ConnOther
	}
}

// classifyIO classifies an error met after connecting, read bytes into the
// response.
func classifyIO(err error, read int) Class {
	switch {
	case isTimeout(err):
		return Timeout
	case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
		return Reset
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		if read == 0 {
			return EOF
		}
		return Malformed // the response was cut short
	default:
		var ne *net.OpError
		if errors.As(err, &ne) {
			return Other
		}
		return Malformed // the response did not parse
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
