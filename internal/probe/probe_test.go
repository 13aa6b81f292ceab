package probe

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/procswitch/supervisor/internal/metrics"
	"github.com/procswitch/supervisor/internal/supervisor"
	"github.com/rs/zerolog"
)

// TestProbes: /healthz and /readyz for each state that matters to an
// orchestrator, on a real listener.
func TestProbes(t *testing.T) {
	var mu sync.Mutex
	var st supervisor.Status
	ok := true
	status := func() (supervisor.Status, bool) {
		mu.Lock()
		defer mu.Unlock()
		return st, ok
	}
	set := func(s supervisor.Status, up bool) {
		mu.Lock()
		defer mu.Unlock()
		st, ok = s, up
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := Serve(ln, status, metrics.New(status), zerolog.Nop())
	defer srv.Close()
	base := "http://" + ln.Addr().String()
	get := func(path string) (int, string) {
		t.Helper()
		c := &http.Client{Timeout: 10 * time.Second}
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	ready := &supervisor.GenStatus{Gen: 2, Workers: []supervisor.WorkerStatus{{PID: 7, Ready: true}}}
	notReady := &supervisor.GenStatus{Gen: 2, Workers: []supervisor.WorkerStatus{{PID: 7}}}
	for _, tc := range []struct {
		name          string
		st            supervisor.Status
		up            bool
		health, ready string // "ok", or what the 503's reason holds
	}{
		{"starting", supervisor.Status{State: "starting"}, true, "starting", "starting"},
		{"serving", supervisor.Status{State: "serving", Current: ready}, true, "ok", "ok"},
		{"upgrading", supervisor.Status{State: "upgrading", Current: ready, Upgrading: notReady}, true, "ok", "ok"},
		{"blackout", supervisor.Status{State: "saving", Current: ready, Blackout: true}, true, "ok", "blackout"},
		{"crash restart", supervisor.Status{State: "serving", Current: notReady}, true, "ok", "no worker of the current generation is ready"},
		{"stopping", supervisor.Status{State: "stopping", Stopping: true}, true, "ok", "stopping"},
		{"loop gone", supervisor.Status{}, false, "does not answer", "does not answer"},
	} {
		set(tc.st, tc.up)
		for path, want := range map[string]string{"/healthz": tc.health, "/readyz": tc.ready} {
			code, body := get(path)
			if want == "ok" && (code != 200 || body != "ok\n") || want != "ok" && (code != 503 || !strings.Contains(body, want)) {
				t.Errorf("%s: %s answered %d %q, want %q", tc.name, path, code, body, want)
			}
		}
	}
	set(supervisor.Status{State: "serving", Current: ready}, true)
	srv.Stopping()
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "--stop-delay") {
		t.Errorf("after Stopping: /readyz %d %q", code, body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("after Stopping: /healthz %d, want 200", code)
	}
}
