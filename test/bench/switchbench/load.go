package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/procswitch/supervisor/test/loadgen"
)

// This file is test/loadgen's client with one change: each request is drawn
// from a list of queries, so that the load is a realistic mix of short and
// long paths. loadgen.Config takes a single URL, hence the copy. As in
// loadgen, nothing is ever retried, one request is in flight per connection,
// and every request is recorded as a loadgen.Record, so loadgen's Result,
// Stats and classes apply unchanged.

// request is one query, as bytes ready to write in either client mode.
type request struct {
	uri       string
	newConn   []byte // asks the server to close the connection
	keepAlive []byte
}

func newRequest(host, uri string) request {
	head := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: switchbench\r\n", uri, host)
	return request{uri: uri, newConn: []byte(head + "Connection: close\r\n\r\n"), keepAlive: []byte(head + "\r\n")}
}

// loadSpec describes a load run.
type loadSpec struct {
	addr    string // HOST:PORT
	uris    []string
	mode    loadgen.Mode
	clients int
	timeout time.Duration // per request
	pause   time.Duration // between a client's requests
	seed    uint64        // client i draws queries from PCG(seed, i)
}

// load is a load run under way.
type load struct {
	spec    loadSpec
	reqs    []request
	start   time.Time
	stop    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	count   atomic.Int64
	perCli  [][]loadgen.Record // each client appends to its own
	stopped *loadgen.Result
}

// startLoad starts spec.clients clients; they run until Stop.
func startLoad(spec loadSpec) *load {
	if spec.clients <= 0 {
		spec.clients = 1
	}
	l := &load{spec: spec, start: time.Now(), stop: make(chan struct{}), perCli: make([][]loadgen.Record, spec.clients)}
	for _, u := range spec.uris {
		l.reqs = append(l.reqs, newRequest(spec.addr, u))
	}
	for i := range spec.clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.client(i)
		}()
	}
	return l
}

// Stop stops the clients, waits for the requests under way (each bounded by
// the request timeout) and returns every record.
func (l *load) Stop() *loadgen.Result {
	l.once.Do(func() {
		close(l.stop)
		l.wg.Wait()
		res := &loadgen.Result{Start: l.start, End: time.Now()}
		for _, recs := range l.perCli {
			res.Records = append(res.Records, recs...)
		}
		l.stopped = res
	})
	return l.stopped
}

// Len is the number of requests recorded so far.
func (l *load) Len() int { return int(l.count.Load()) }

func (l *load) done() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

func (l *load) client(id int) {
	rng := rand.New(rand.NewPCG(l.spec.seed, uint64(id)))
	var c *conn
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for !l.done() {
		req := l.reqs[rng.IntN(len(l.reqs))]
		var rec loadgen.Record
		rec, c = do(l.spec.addr, req, c, l.spec.mode, l.spec.timeout)
		rec.Client = id
		l.perCli[id] = append(l.perCli[id], rec)
		l.count.Add(1)
		if l.spec.pause > 0 {
			t := time.NewTimer(l.spec.pause)
			select {
			case <-t.C:
			case <-l.stop:
			}
			t.Stop()
		}
	}
}

// conn is a client connection; read counts the bytes of the current
// response, to tell an empty reply from a truncated one.
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

// do sends one request on c (a new connection when c is nil) and returns its
// record and the connection to reuse, if any.
func do(addr string, req request, c *conn, mode loadgen.Mode, timeout time.Duration) (loadgen.Record, *conn) {
	rec := loadgen.Record{Start: time.Now(), Reused: c != nil}
	deadline := rec.Start.Add(timeout)
	finish := func(class loadgen.Class, err error) (loadgen.Record, *conn) {
		rec.Latency = time.Since(rec.Start)
		rec.Class, rec.Err = class, err
		if class != loadgen.OK && c != nil {
			c.Close()
			c = nil
		}
		return rec, c
	}
	if c == nil {
		d := net.Dialer{Deadline: deadline}
		nc, err := d.Dial("tcp", addr)
		if err != nil {
			return finish(classifyDial(err), err)
		}
		c = &conn{Conn: nc}
		c.br = bufio.NewReader(c)
	}
	c.read = 0
	if err := c.SetDeadline(deadline); err != nil {
		return finish(loadgen.ConnOther, err)
	}
	b := req.newConn
	if mode == loadgen.KeepAlive {
		b = req.keepAlive
	}
	if _, err := c.Write(b); err != nil {
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
	if resp.StatusCode != http.StatusOK {
		return finish(loadgen.BadStatus, fmt.Errorf("status %s for %s", resp.Status, req.uri))
	}
	if mode != loadgen.KeepAlive || resp.Close {
		c.Close()
		c = nil
	}
	return finish(loadgen.OK, nil)
}

func classifyDial(err error) loadgen.Class {
	switch {
	case isTimeout(err):
		return loadgen.Timeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return loadgen.ConnRefused
	default:
		return loadgen.ConnOther
	}
}

// classifyIO classifies an error met after connecting, read bytes into the
// response.
func classifyIO(err error, read int) loadgen.Class {
	switch {
	case isTimeout(err):
		return loadgen.Timeout
	case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
		return loadgen.Reset
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		if read == 0 {
			return loadgen.EOF
		}
		return loadgen.Malformed // the response was cut short
	default:
		var ne *net.OpError
		if errors.As(err, &ne) {
			return loadgen.Other
		}
		return loadgen.Malformed // the response did not parse
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
