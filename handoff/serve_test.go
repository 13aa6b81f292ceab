package handoff

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/internal/contract"
)

const (
	handlerDelay   = 2 * time.Millisecond // the work each request stands for
	requestTimeout = 10 * time.Second     // bounds one raw request
	loadClients    = 8
	loadSwitches   = 5
	perGeneration  = 40 // requests each generation must serve before the next switch
)

// helperServe is a worker using ServeHTTP.
func helperServe() error {
	w, srv, ln, drain, err := helperServer()
	if err != nil {
		return err
	}
	if err := w.Ready(); err != nil {
		return err
	}
	return ServeHTTP(context.Background(), srv, ln, drain)
}

// helperShutdown is the control: the common pattern, http.Server.Shutdown
// on the drain signal, as in tableflip's documentation.
func helperShutdown() error {
	w, srv, ln, drain, err := helperServer()
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if err := w.Ready(); err != nil {
		return err
	}
	select {
	case err := <-served:
		return err
	case <-drain:
	}
	ctx, cancel := context.WithTimeout(context.Background(), exitTimeout)
	defer cancel()
	return srv.Shutdown(ctx)
}

// helperServer sets up a worker's server: a handler that takes handlerDelay
// and names its generation, and a drain channel closed once STOPPING=1 was
// sent, so that the test can rely on seeing it.
func helperServer() (*Worker, *http.Server, net.Listener, <-chan struct{}, error) {
	w, err := New()
	if err != nil {
		return nil, nil, nil, nil, err
	}
	ln, err := w.Listener("http")
	if err != nil {
		return nil, nil, nil, nil, err
	}
	gen := w.Generation()
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		time.Sleep(handlerDelay)
		fmt.Fprintf(rw, "gen=%d\n", gen)
	})}
	drain := make(chan struct{})
	go func() {
		<-w.Draining()
		if err := w.Stopping(); err != nil {
			fmt.Fprintf(os.Stderr, "stopping: %v\n", err)
		}
		close(drain)
	}()
	return w, srv, ln, drain, nil
}

// rawClient speaks just enough HTTP/1.1 over a net.Conn to never retry, unlike
// http.Transport, which silently retries idempotent requests and would hide
// a lost one.
type rawClient struct {
	addr      string
	keepAlive bool // keep the connection until the server says Connection: close
	conn      net.Conn
	br        *bufio.Reader
}

// get sends one GET and reads its answer; any error is a lost request.
func (c *rawClient) get(path string) (*http.Response, string, error) {
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.addr, requestTimeout)
		if err != nil {
			return nil, "", err
		}
		c.conn, c.br = conn, bufio.NewReader(conn)
	}
	c.conn.SetDeadline(time.Now().Add(requestTimeout))
	req := "GET " + path + " HTTP/1.1\r\nHost: handoff.test\r\n"
	if !c.keepAlive {
		req += "Connection: close\r\n"
	}
	resp, body, err := c.roundTrip(req + "\r\n")
	if err != nil || !c.keepAlive || resp.Close {
		c.close()
	}
	return resp, body, err
}

func (c *rawClient) roundTrip(req string) (*http.Response, string, error) {
	if _, err := io.WriteString(c.conn, req); err != nil {
		return nil, "", err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return nil, "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("status %s", resp.Status)
	}
	return resp, string(body), nil
}

func (c *rawClient) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn, c.br = nil, nil
	}
}

// tally counts answered requests per generation and lost ones.
type tally struct {
	mu      sync.Mutex
	served  map[int]int
	lost    int
	errs    []string
	changed chan struct{} // closed and replaced on every answer
}

func (tl *tally) answered(gen int) {
	tl.mu.Lock()
	tl.served[gen]++
	close(tl.changed)
	tl.changed = make(chan struct{})
	tl.mu.Unlock()
}

func (tl *tally) failed(err error) {
	tl.mu.Lock()
	tl.lost++
	if len(tl.errs) < 5 {
		tl.errs = append(tl.errs, err.Error())
	}
	tl.mu.Unlock()
}

// waitServed waits until generation gen has answered n requests.
func (tl *tally) waitServed(t *testing.T, gen, n int) {
	t.Helper()
	deadline := time.After(readyTimeout)
	for {
		tl.mu.Lock()
		got, ch := tl.served[gen], tl.changed
		tl.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("generation %d answered %d requests in %v, want %d", gen, got, readyTimeout, n)
		}
	}
}

// startLoad runs loadClients clients against addr until the returned stop
// function is called; stop waits for them (bounded).
func startLoad(t *testing.T, addr string, keepAlive bool) (*tally, func()) {
	tl := &tally{served: make(map[int]int), changed: make(chan struct{})}
	quit := make(chan struct{})
	var wg sync.WaitGroup
	for range loadClients {
		wg.Go(func() {
			c := &rawClient{addr: addr, keepAlive: keepAlive}
			defer c.close()
			for {
				select {
				case <-quit:
					return
				default:
				}
				_, body, err := c.get("/")
				var gen int
				if err == nil {
					_, err = fmt.Sscanf(body, "gen=%d\n", &gen)
				}
				if err != nil {
					tl.failed(err)
					continue
				}
				tl.answered(gen)
			}
		})
	}
	stop := func() {
		close(quit)
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * requestTimeout):
			t.Fatal("clients did not stop")
		}
	}
	return tl, stop
}

// runSwitches starts generation 1 of helper on a socket the test holds, puts
// it under load, and switches generations loadSwitches times the way the
// supervisor does: start the next, wait for READY=1, send SIGTERM to the
// previous one and wait for it to exit by itself.
func runSwitches(t *testing.T, helper string, keepAlive bool) *tally {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	start := func(gen int) *child {
		f := socketFile(t, ln.(*net.TCPListener))
		c := startChild(t, helper, []*os.File{f}, []string{"http"}, contract.EnvGeneration+"="+strconv.Itoa(gen))
		f.Close()
		c.expect(t, contract.MsgReady, readyTimeout)
		return c
	}
	cur := start(1)
	tl, stop := startLoad(t, ln.Addr().String(), keepAlive)
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	for gen := 2; gen <= loadSwitches+1; gen++ {
		tl.waitServed(t, gen-1, perGeneration)
		next := start(gen)
		cur.signal(t, syscall.SIGTERM)
		cur.expect(t, contract.MsgStopping, readyTimeout)
		if err := cur.wait(t, exitTimeout); err != nil {
			t.Errorf("generation %d: %v; stderr:\n%s", gen-1, err, cur.stderr.String())
		}
		cur = next
	}
	tl.waitServed(t, loadSwitches+1, perGeneration)
	stop()
	stop = nil
	cur.signal(t, syscall.SIGTERM)
	if err := cur.wait(t, exitTimeout); err != nil {
		t.Errorf("last generation: %v; stderr:\n%s", err, cur.stderr.String())
	}
	return tl
}

func TestServeHTTPZeroLoss(t *testing.T) {
	for _, mode := range []struct {
		name      string
		keepAlive bool
	}{{"new connection per request", false}, {"keep-alive", true}} {
		t.Run(mode.name, func(t *testing.T) {
			tl := runSwitches(t, "serve", mode.keepAlive)
			t.Logf("answered per generation: %v", tl.served)
			if tl.lost > 0 {
				t.Errorf("%d requests lost over %d switches; first errors: %q", tl.lost, loadSwitches, tl.errs)
			}
		})
	}
}

// TestShutdownLosesRequests is the control: with http.Server.Shutdown on
// the drain signal, keep-alive clients that do not retry lose requests
// (the server closes idle connections the client is about to reuse). It is
// a demonstration, so it skips rather than fails when no loss happens.
func TestShutdownLosesRequests(t *testing.T) {
	if testing.Short() {
		t.Skip("control experiment")
	}
	tl := runSwitches(t, "shutdown", true)
	if tl.lost == 0 {
		t.Skipf("no request lost this time (answered %v)", tl.served)
	}
	t.Logf("http.Server.Shutdown lost %d requests over %d switches; first errors: %q", tl.lost, loadSwitches, tl.errs)
}

// TestServeHTTPDrain follows connections in each state through a drain, in
// process.
func TestServeHTTPDrain(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // the test holds the socket, as the supervisor does
	own, err := net.FileListener(socketFile(t, ln.(*net.TCPListener)))
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()

	entered, release := make(chan struct{}), make(chan struct{})
	newConns := make(chan string, 16) // remote addresses, from the chained ConnState
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(rw http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		io.WriteString(rw, "slow")
	})
	mux.HandleFunc("/", func(rw http.ResponseWriter, r *http.Request) { io.WriteString(rw, "fast") })
	const grace = 500 * time.Millisecond
	srv := &http.Server{Handler: mux, IdleTimeout: grace, ConnState: func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			newConns <- c.RemoteAddr().String()
		}
	}}
	drain := make(chan struct{})
	served := make(chan error, 1)
	go func() { served <- ServeHTTP(context.Background(), srv, own, drain) }()

	// b: a request in its handler when the drain begins.
	b := &rawClient{addr: addr, keepAlive: true}
	defer b.close()
	bAnswer := make(chan error, 1)
	go func() {
		resp, body, err := b.get("/slow")
		if err == nil && (resp.Close || body != "slow") {
			err = fmt.Errorf("got %q, close %v; want slow, kept alive", body, resp.Close)
		}
		bAnswer <- err
	}()
	wait(t, entered, "the slow handler to start")
	// c: accepted, sends nothing.
	c, err := net.DialTimeout("tcp", addr, requestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for got := ""; got != c.LocalAddr().String(); {
		select {
		case got = <-newConns:
		case <-time.After(requestTimeout):
			t.Fatal("connection c not accepted")
		}
	}

	// a: keep-alive, answered before the drain and reused during it.
	a := &rawClient{addr: addr, keepAlive: true}
	defer a.close()
	if resp, _, err := a.get("/"); err != nil || resp.Close {
		t.Fatalf("before the drain: %v, close %v; want a kept-alive answer", err, resp != nil && resp.Close)
	}

	close(drain)
	resp, body, err := a.get("/")
	if err != nil || !resp.Close || body != "fast" {
		t.Fatalf("a's request during the drain: %q, %v; want fast with Connection: close", body, err)
	}
	close(release)
	if err := waitErr(t, bAnswer, "b's answer"); err != nil {
		t.Fatalf("b's request in flight at the drain: %v", err)
	}
	// b is now idle and c never spoke: both are closed after the grace period.
	for name, conn := range map[string]net.Conn{"b": b.conn, "c": c} {
		conn.SetReadDeadline(time.Now().Add(requestTimeout))
		if n, err := conn.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
			t.Errorf("idle connection %s: read %d, %v; want EOF after the grace period", name, n, err)
		}
	}
	if err := waitErr(t, served, "ServeHTTP to return"); err != nil {
		t.Fatalf("ServeHTTP: %v", err)
	}
}

func TestServeHTTPServeError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	boom := errors.New("boom")
	served := make(chan error, 1)
	go func() {
		served <- ServeHTTP(context.Background(), &http.Server{}, failingListener{ln, boom}, make(chan struct{}))
	}()
	if err := waitErr(t, served, "ServeHTTP to fail"); !errors.Is(err, boom) {
		t.Fatalf("ServeHTTP: %v, want %v", err, boom)
	}
	if err := ServeHTTP(context.Background(), nil, ln, nil); err == nil || !strings.HasPrefix(err.Error(), "handoff: ") {
		t.Fatalf("ServeHTTP(ctx, nil, ...): %v, want a handoff: error", err)
	}
}

// TestServeHTTPContext: ctx bounds the drain (a handler that never ends
// does not hold ServeHTTP), and ends the service at once when it is done
// before the drain.
func TestServeHTTPContext(t *testing.T) {
	for _, before := range []bool{false, true} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		entered, release := make(chan struct{}), make(chan struct{})
		srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			close(entered)
			<-release
		})}
		ctx, cancel := context.WithCancel(context.Background())
		drain := make(chan struct{})
		served := make(chan error, 1)
		go func() { served <- ServeHTTP(ctx, srv, ln, drain) }()
		c := &rawClient{addr: ln.Addr().String(), keepAlive: true}
		answer := make(chan error, 1)
		go func() { _, _, err := c.get("/stuck"); answer <- err }()
		wait(t, entered, "the handler to start")
		if !before {
			close(drain)
			select {
			case err := <-served:
				t.Fatalf("ServeHTTP returned %v with a handler running", err)
			case <-time.After(50 * time.Millisecond):
			}
		}
		cancel()
		if err := waitErr(t, served, "ServeHTTP to return"); !errors.Is(err, context.Canceled) {
			t.Errorf("drain begun %v: ServeHTTP: %v, want context.Canceled", !before, err)
		}
		if err := waitErr(t, answer, "the client to see its connection closed"); err == nil {
			t.Errorf("drain begun %v: the stuck request was answered, want its connection closed", !before)
		}
		close(release)
		c.close()
		ln.Close()
	}
}

type failingListener struct {
	net.Listener
	err error
}

func (l failingListener) Accept() (net.Conn, error) { return nil, l.err }

func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(requestTimeout):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func waitErr(t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(requestTimeout):
		t.Fatalf("timed out waiting for %s", what)
		return nil
	}
}
