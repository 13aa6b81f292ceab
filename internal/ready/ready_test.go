package ready

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want Probe
		str  string // String(), if it differs from in
	}{
		{in: "notify", want: Probe{Mode: Notify}},
		{in: "tcp", want: Probe{Mode: TCP}},
		{in: "http://127.0.0.1:8080/healthz", want: Probe{Mode: HTTP, URL: "http://127.0.0.1:8080/healthz"}},
		{in: "http://[::1]:80/", want: Probe{Mode: HTTP, URL: "http://[::1]:80/"}},
		{in: "http://localhost", want: Probe{Mode: HTTP, URL: "http://localhost"}},
		{in: "http://user:pw@127.0.0.1:8080/ready?x=1", want: Probe{Mode: HTTP, URL: "http://user:pw@127.0.0.1:8080/ready?x=1"}},
		{in: "delay:500ms", want: Probe{Mode: Delay, Delay: 500 * time.Millisecond}},
		{in: "delay:2s", want: Probe{Mode: Delay, Delay: 2 * time.Second}},
		{in: "delay:1m30s", want: Probe{Mode: Delay, Delay: 90 * time.Second}},
		{in: "delay:0s", want: Probe{Mode: Delay}},
		{in: "delay:0", want: Probe{Mode: Delay}, str: "delay:0s"},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Parse(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		str := tt.str
		if str == "" {
			str = tt.in
		}
		if got.String() != str {
			t.Errorf("Parse(%q).String() = %q, want %q", tt.in, got.String(), str)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, in := range []string{
		"", "NOTIFY", "Tcp", "udp", "tcp:8080", "127.0.0.1:8080", "ftp://x/",
		"http://", "http:///path", "https://", "http://%zz/", "http://:8080/",
		"https://example.com/ready", // the probe speaks plain HTTP only
		"delay", "delay:", "delay:abc", "delay:500", "delay:-1s", "delay: 1s",
		"HTTP://127.0.0.1/",
	} {
		if got, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", in, got)
		} else if len(err.Error()) < len("ready: ") || err.Error()[:7] != "ready: " {
			t.Errorf("Parse(%q): %q lacks the ready: prefix", in, err)
		}
	}
}

func TestAwaitNotifyReturnsAtOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // even a dead context: there is nothing to wait for
	if err := (Probe{Mode: Notify}).Await(ctx, Target{}); err != nil {
		t.Errorf("Await(notify) = %v, want nil", err)
	}
}

func TestAwaitDelay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const d = 30 * time.Millisecond
	start := time.Now()
	if err := (Probe{Mode: Delay, Delay: d}).Await(ctx, Target{}); err != nil {
		t.Fatalf("Await(delay) = %v", err)
	}
	if el := time.Since(start); el < d {
		t.Errorf("Await(delay:%v) returned after %v", d, el)
	}
	if err := (Probe{Mode: Delay}).Await(ctx, Target{}); err != nil {
		t.Errorf("Await(delay:0) = %v", err)
	}
}

func TestAwaitDelayContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := (Probe{Mode: Delay, Delay: time.Hour}).Await(ctx, Target{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Await(delay:1h) with a cancelled context = %v, want context.Canceled", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := (Probe{Mode: Delay, Delay: time.Hour}).Await(ctx, Target{}); err != ctx.Err() || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Await(delay:1h) past the deadline = %v, want ctx.Err()", err)
	}
}

func TestAwaitHTTP(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		// Starting up: the first two probes are answered 503.
		if hits.Add(1) <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	p, err := Parse(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Await(ctx, Target{}); err != nil {
		t.Fatalf("Await(%s) = %v", p, err)
	}
	if n := hits.Load(); n != 3 {
		t.Errorf("ready after %d requests, want 3 (two 503s, then 204)", n)
	}
}

func TestAwaitHTTPNotReady(t *testing.T) {
	statuses := []int{http.StatusNotFound, http.StatusInternalServerError, http.StatusServiceUnavailable, http.StatusMultipleChoices}
	for _, status := range statuses {
		t.Run(http.StatusText(status), func(t *testing.T) {
			var hits atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.Add(1)
				w.WriteHeader(status)
			}))
			defer srv.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Millisecond)
			defer cancel()
			err := Probe{Mode: HTTP, URL: srv.URL}.Await(ctx, Target{})
			if err != ctx.Err() || !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Await against a %d server = %v, want ctx.Err()", status, err)
			}
			if hits.Load() == 0 {
				t.Error("the probe never asked")
			}
		})
	}
}

// Nobody listening is not ready either, and the deadline still ends the wait.
func TestAwaitHTTPRefused(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Millisecond)
	defer cancel()
	if err := (Probe{Mode: HTTP, URL: url}).Await(ctx, Target{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Await against a closed port = %v, want DeadlineExceeded", err)
	}
}
