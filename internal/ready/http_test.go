package ready

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawServer is an HTTP server written by hand on loopback, to answer the
// probe with anything, well-formed or not. Each connection: it reads the
// request head, passes it on requests, writes reply, then closes the
// connection, or holds it open until the test ends when hold is set.
type rawServer struct {
	addr     string
	requests chan string
}

func newRawServer(t *testing.T, reply string, hold bool) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{addr: ln.Addr().String(), requests: make(chan string, 64)}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				head, err := readHead(bufio.NewReader(c))
				if err != nil {
					c.Close()
					return
				}
				select {
				case s.requests <- head:
				default:
				}
				c.Write([]byte(reply))
				if !hold {
					c.Close()
				}
			}()
		}
	}()
	return s
}

// readHead reads a request up to its blank line.
func readHead(r *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return "", err
		}
		b.WriteString(line)
		if line == "\r\n" {
			return b.String(), nil
		}
	}
}

// attempt makes one probe attempt at rawURL with a context that never ends
// (the attempt's own timeout bounds it), and reports its result and
// duration.
func attempt(t *testing.T, rawURL string) (bool, time.Duration) {
	t.Helper()
	target, err := parseHTTP(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan bool, 1)
	start := time.Now()
	go func() { done <- target.ok(context.Background()) }()
	select {
	case ok := <-done:
		return ok, time.Since(start)
	case <-time.After(helperTimeout):
		t.Fatalf("one probe attempt at %s still running after %v", rawURL, helperTimeout)
	}
	return false, 0
}

func TestHTTPProbeStatuses(t *testing.T) {
	tests := []struct {
		reply string
		ready bool
	}{
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true},
		{"HTTP/1.1 204 No Content\r\n\r\n", true},
		{"HTTP/1.0 200 OK\r\n\r\n", true},
		{"HTTP/1.1 299 Whatever\r\n\r\n", true},
		{"HTTP/1.1 200\r\n\r\n", true},  // no reason phrase
		{"HTTP/1.1 200 \r\n\r\n", true}, // an empty one
		{"HTTP/1.1 200 OK\n\n", true},   // bare LF
		{"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", true},
		{"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", true},
		{"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 503 Service Unavailable\r\n\r\n", false},
		{"HTTP/1.1 100 Continue\r\n\r\n", false}, // and then nothing
		{"HTTP/1.1 101 Switching Protocols\r\n\r\n", false},
		{"HTTP/1.1 199 Informational\r\nX: y\r\n", false},
		{"HTTP/1.1 300 Multiple Choices\r\n\r\n", false},
		{"HTTP/1.1 301 Moved Permanently\r\nLocation: /elsewhere\r\n\r\n", false}, // not followed
		{"HTTP/1.1 404 Not Found\r\n\r\n", false},
		{"HTTP/1.1 500 Internal Server Error\r\n\r\n", false},
		{"HTTP/1.1 503 Service Unavailable\r\n\r\n", false},
		// Garbage.
		{"", false},
		{"hello\r\n", false},
		{"SSH-2.0-OpenSSH_9.2\r\n", false},
		{"HTTP/1.1 2OO OK\r\n\r\n", false},
		{"HTTP/1.1 20 OK\r\n\r\n", false},
		{"HTTP/1.1 2000 OK\r\n\r\n", false},
		{"HTTP/1.1 099 Low\r\n\r\n", false},
		{"HTTP/1.1200 OK\r\n\r\n", false},
		{"HTTP/2 200\r\n\r\n", false},
		{"HTTP/1.x 200 OK\r\n\r\n", false},
		{"http/1.1 200 OK\r\n\r\n", false},
		{" HTTP/1.1 200 OK\r\n\r\n", false},
		{"HTTP/1.1 200 OK", false}, // cut short: no end of line
		{"\x00\xff\xfe\r\n\r\n", false},
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.reply, "\r\n", "|"), func(t *testing.T) {
			s := newRawServer(t, tt.reply, false)
			if ok, _ := attempt(t, "http://"+s.addr+"/healthz"); ok != tt.ready {
				t.Errorf("reply %q: ready = %v, want %v", tt.reply, ok, tt.ready)
			}
		})
	}
}

// The request is a well-formed HTTP/1.1 GET for the URL's path and query,
// with its Host, on a connection the probe closes.
func TestHTTPProbeRequest(t *testing.T) {
	s := newRawServer(t, "HTTP/1.1 204 No Content\r\n\r\n", false)
	if ok, _ := attempt(t, "http://admin:s3cret@"+s.addr+"/ready?deep=1#frag"); !ok {
		t.Fatal("not ready on 204")
	}
	head := <-s.requests
	for _, want := range []string{
		"GET /ready?deep=1 HTTP/1.1\r\n",
		"\r\nHost: " + s.addr + "\r\n",
		"\r\nConnection: close\r\n",
		"\r\nAuthorization: Basic YWRtaW46czNjcmV0\r\n", // admin:s3cret
	} {
		if !strings.Contains(head, want) {
			t.Errorf("request %q lacks %q", head, want)
		}
	}
	if !strings.HasPrefix(head, "GET ") {
		t.Errorf("request %q is not a GET", head)
	}
}

// An endless status line, or endless informational responses, are cut off
// by the length bound, without waiting for the attempt's timeout.
func TestHTTPProbeBoundsWhatItReads(t *testing.T) {
	long := strings.Repeat("A", maxResponseHead+1)
	for name, reply := range map[string]string{
		"line":  long,
		"1xx":   strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", maxResponseHead/25+1),
		"field": "HTTP/1.1 100 Continue\r\nX-Long: " + long,
	} {
		t.Run(name, func(t *testing.T) {
			s := newRawServer(t, reply, true)
			ok, took := attempt(t, "http://"+s.addr+"/")
			if ok {
				t.Error("ready on an endless reply")
			}
			if took >= httpAttempt {
				t.Errorf("the attempt took %v: it waited for its timeout instead of stopping at %d bytes", took, maxResponseHead)
			}
		})
	}
}

// A server that accepts and never answers, or answers half a line and
// stops, is not ready, and the readiness timeout ends the wait: it cuts an
// attempt short.
func TestAwaitHTTPSilentServer(t *testing.T) {
	for name, reply := range map[string]string{"silent": "", "stalls": "HTTP/1.1 2"} {
		t.Run(name, func(t *testing.T) {
			s := newRawServer(t, reply, true)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- Probe{Mode: HTTP, URL: "http://" + s.addr + "/"}.Await(ctx, Target{}) }()
			select { // the probe's first request arrives
			case <-s.requests:
			case <-time.After(helperTimeout):
				t.Fatalf("no request within %v", helperTimeout)
			}
			cancel() // the ready timeout, as the supervisor's context ends
			cancelled := time.Now()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Await = %v, want context.Canceled", err)
				}
				if took := time.Since(cancelled); took >= httpAttempt {
					t.Errorf("Await returned %v after its context ended: the attempt under way ran to its own timeout", took)
				}
			case <-time.After(helperTimeout):
				t.Fatalf("Await still waiting %v after its context ended", helperTimeout)
			}
		})
	}
}

// A server that hangs up at once, or talks garbage, keeps the probe asking
// until its context ends.
func TestAwaitHTTPGarbageKeepsAsking(t *testing.T) {
	for _, reply := range []string{"", "garbage\r\n\r\n", "HTTP/1.1 200 OK"} {
		s := newRawServer(t, reply, false)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- Probe{Mode: HTTP, URL: "http://" + s.addr + "/"}.Await(ctx, Target{}) }()
		for range 3 {
			select {
			case <-s.requests:
			case err := <-done:
				t.Fatalf("reply %q: Await = %v before the context ended", reply, err)
			case <-time.After(helperTimeout):
				t.Fatalf("reply %q: the probe stopped asking", reply)
			}
		}
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("reply %q: Await = %v, want context.Canceled", reply, err)
			}
		case <-time.After(helperTimeout):
			t.Fatalf("reply %q: Await still waiting %v after its context ended", reply, helperTimeout)
		}
	}
}
