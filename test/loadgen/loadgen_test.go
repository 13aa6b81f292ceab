package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testDuration is how long each load run lasts.
const testDuration = 300 * time.Millisecond

// counting is an httptest server that counts the connections it accepted.
type counting struct {
	*httptest.Server
	conns atomic.Int64
}

func newServer(t *testing.T, h http.HandlerFunc) *counting {
	t.Helper()
	s := &counting{}
	s.Server = httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func pidHandler(pid int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Worker-Pid", strconv.Itoa(pid))
		w.Header().Set("X-Worker-Version", "v7")
		w.Write([]byte(`{"ok":true}`))
	}
}

func run(t *testing.T, cfg Config) *Result {
	t.Helper()
	if cfg.Duration == 0 {
		cfg.Duration = testDuration
	}
	r, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.Done():
	case <-time.After(cfg.Duration + 10*time.Second):
		t.Fatal("run did not end")
	}
	return r.Wait()
}

func TestModes(t *testing.T) {
	for _, mode := range []Mode{NewConn, KeepAlive} {
		t.Run(mode.String(), func(t *testing.T) {
			s := newServer(t, pidHandler(4242))
			res := run(t, Config{URL: s.URL + "/path?from=1,2&to=3,4", Mode: mode, Clients: 4})
			n := len(res.Records)
			if n < 20 || res.Failed() != 0 {
				t.Fatalf("want many OK requests, got:\n%s", res.Summary())
			}
			if got := res.ByPID()[4242]; got != n {
				t.Errorf("ByPID()[4242] = %d, want %d", got, n)
			}
			if v := res.Records[0].Version; v != "v7" {
				t.Errorf("Version = %q, want v7", v)
			}
			conns := int(s.conns.Load())
			switch mode {
			case NewConn:
				if conns != n {
					t.Errorf("new-conn mode: %d connections for %d requests", conns, n)
				}
			case KeepAlive:
				if conns != 4 {
					t.Errorf("keep-alive mode: %d connections for 4 clients", conns)
				}
			}
			st := res.Stats()
			if st.P50 <= 0 || st.P99 < st.P50 || st.Max < st.P99 {
				t.Errorf("implausible stats %v", st)
			}
		})
	}
}

func TestKeepAliveReopensAfterConnectionClose(t *testing.T) {
	var n atomic.Int64
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%3 == 0 {
			w.Header().Set("Connection", "close")
		}
		w.Write([]byte("ok"))
	})
	res := run(t, Config{URL: s.URL + "/", Mode: KeepAlive, Clients: 2})
	if res.Failed() != 0 {
		t.Fatalf("Connection: close counted as a failure:\n%s", res.Summary())
	}
	if res.Reconnects() == 0 || int(s.conns.Load()) < res.Reconnects() {
		t.Errorf("%d reconnects, %d connections", res.Reconnects(), s.conns.Load())
	}
}

func TestBadStatus(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusInternalServerError)
	})
	res := run(t, Config{URL: s.URL + "/", Mode: KeepAlive})
	if c := res.ByClass(); c[BadStatus] == 0 || c[BadStatus] != len(res.Records) {
		t.Fatalf("want only bad-status, got:\n%s", res.Summary())
	}
	ok := run(t, Config{URL: s.URL + "/", OKStatus: func(c int) bool { return c == 500 }})
	if ok.Failed() != 0 {
		t.Fatalf("OKStatus ignored:\n%s", ok.Summary())
	}
}

func TestRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	rec, err := Get("http://"+addr+"/", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Class != ConnRefused {
		t.Fatalf("class %v (%v), want connect-refused", rec.Class, rec.Err)
	}
}

// rawServer accepts connections on loopback and hands each, after reading
// the request head, to f.
func rawServer(t *testing.T, f func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			br := bufio.NewReader(c)
			for {
				line, err := br.ReadString('\n')
				if err != nil || line == "\r\n" {
					break
				}
			}
			f(c.(*net.TCPConn))
		}
	}()
	return "http://" + ln.Addr().String() + "/"
}

func TestErrorClasses(t *testing.T) {
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	tests := []struct {
		name  string
		serve func(c *net.TCPConn)
		want  Class
	}{
		{"reset", func(c *net.TCPConn) { c.SetLinger(0); c.Close() }, Reset},
		{"eof", func(c *net.TCPConn) { c.Close() }, EOF},
		{"garbage", func(c *net.TCPConn) { c.Write([]byte("garbage\r\n\r\n")); c.Close() }, Malformed},
		{"truncated head", func(c *net.TCPConn) { c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Le")); c.Close() }, Malformed},
		{"truncated body", func(c *net.TCPConn) {
			c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"))
			c.Close()
		}, Malformed},
		{"timeout", func(c *net.TCPConn) {
			go func() { <-hang; c.Close() }()
		}, Timeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := rawServer(t, tt.serve)
			rec, err := Get(url, 200*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Class != tt.want {
				t.Fatalf("class %v (%v), want %v", rec.Class, rec.Err, tt.want)
			}
			if rec.Err == nil {
				t.Error("no error recorded")
			}
		})
	}
}

func TestWindow(t *testing.T) {
	t0 := time.Now()
	res := &Result{Start: t0, End: t0.Add(3 * time.Second)}
	for i := 0; i < 100; i++ {
		res.Records = append(res.Records, Record{Start: t0.Add(time.Duration(i) * 10 * time.Millisecond), Latency: time.Duration(i+1) * time.Millisecond})
	}
	res.Records = append(res.Records, Record{Start: t0.Add(2 * time.Second), Class: Reset})
	all := res.Stats()
	if all.Requests != 101 || all.Failed != 1 || all.P50 != 50*time.Millisecond || all.P99 != 99*time.Millisecond || all.Max != 100*time.Millisecond {
		t.Errorf("Stats() = %+v", all)
	}
	w := res.Window(t0, t0.Add(100*time.Millisecond)) // the first ten
	if w.Requests != 10 || w.Failed != 0 || w.P50 != 5*time.Millisecond || w.Max != 10*time.Millisecond {
		t.Errorf("Window(first 100ms) = %+v", w)
	}
	if w := res.Window(t0.Add(time.Second), t0.Add(3*time.Second)); w.Requests != 1 || w.Failed != 1 || w.P99 != 0 {
		t.Errorf("Window(1s..3s) = %+v", w)
	}
}

func TestStopIsPrompt(t *testing.T) {
	var n atomic.Int64
	tenth := make(chan struct{})
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 10 {
			close(tenth)
		}
		w.Write([]byte("ok"))
	})
	r, err := Start(context.Background(), Config{URL: s.URL + "/", Clients: 3, Mode: KeepAlive})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-tenth:
	case <-time.After(5 * time.Second):
		t.Fatal("no ten requests in 5s")
	}
	stopped := make(chan *Result)
	go func() { stopped <- r.Stop() }()
	select {
	case res := <-stopped:
		if res.Failed() != 0 || len(res.Records) < 10 {
			t.Errorf("stopping failed requests:\n%s", res.Summary())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not return")
	}
}

func TestAwait(t *testing.T) {
	s := newServer(t, pidHandler(1))
	r, err := Start(context.Background(), Config{URL: s.URL + "/", Clients: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Await(50, 5*time.Second) || r.Len() < 50 {
		t.Fatalf("Await(50): only %d requests", r.Len())
	}
	res := r.Stop()
	if r.Await(len(res.Records)+1, time.Minute) {
		t.Error("Await past the end of a stopped run reported success")
	}
}

func TestBadURL(t *testing.T) {
	for _, u := range []string{"https://x/", "127.0.0.1:80/", "http:///x"} {
		if _, err := Start(context.Background(), Config{URL: u}); err == nil {
			t.Errorf("Start(%q) succeeded", u)
		}
	}
}

// TestNext checks that Next names every request of every client, in order,
// and that URL then gives only the host.
func TestNext(t *testing.T) {
	var mu sync.Mutex
	got := make(map[string]bool)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got[r.URL.RequestURI()] = true
		mu.Unlock()
		w.Write([]byte("ok"))
	})
	const clients = 3
	var calls [clients]int
	next := func(client, seq int) string {
		if seq != calls[client] {
			t.Errorf("client %d: seq %d, want %d", client, seq, calls[client])
		}
		calls[client]++
		return fmt.Sprintf("/q?client=%d&seq=%d", client, seq)
	}
	for _, mode := range []Mode{NewConn, KeepAlive} {
		t.Run(mode.String(), func(t *testing.T) {
			calls = [clients]int{}
			mu.Lock()
			clear(got)
			mu.Unlock()
			res := run(t, Config{URL: s.URL + "/ignored", Next: next, Mode: mode, Clients: clients})
			mu.Lock()
			defer mu.Unlock()
			if res.Failed() != 0 || len(res.Records) < 10 {
				t.Fatalf("want many OK requests, got:\n%s", res.Summary())
			}
			if got["/ignored"] {
				t.Errorf("a request went to the URL's path despite Next")
			}
			total := 0
			for c, n := range calls {
				for seq := range n {
					if uri := fmt.Sprintf("/q?client=%d&seq=%d", c, seq); !got[uri] {
						t.Errorf("the server never saw %s", uri)
					}
				}
				total += n
			}
			if total != len(res.Records) || len(got) != total {
				t.Errorf("Next called %d times, %d records, the server saw %d distinct requests", total, len(res.Records), len(got))
			}
		})
	}
}
