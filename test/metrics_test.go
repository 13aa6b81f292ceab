package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/test/procwatch"
)

// metricsAddr waits for the supervisor's "serving /metrics" line and
// returns the address.
func (s *supervisor) metricsAddr() string {
	s.t.Helper()
	e, _ := s.waitFor(0, waitBound, "the metrics listener", msg("serving /metrics, /healthz and /readyz", []string{"addr"}))
	return e.Str("addr")
}

// get does one GET and returns the status code and the body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: probeTimeout}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// expectGet checks that GET url answers code with a body that begins with
// prefix.
func expectGet(t *testing.T, url string, code int, prefix string) {
	t.Helper()
	got, body := get(t, url)
	if got != code || !strings.HasPrefix(body, prefix) {
		t.Fatalf("GET %s: %d %q, want %d %q...", url, got, body, code, prefix)
	}
}

// sample returns the value of the series (name and labels, as the text
// format prints them) in text, and whether it is there.
func sample(text, series string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
			return v, err == nil
		}
	}
	return 0, false
}

// awaitSamples scrapes url until every series has its value, within
// waitBound; the history records that the counters come from are made once
// the new binary is hashed, on a goroutine, so they lag the log a little.
func awaitSamples(t *testing.T, url string, want map[string]float64) string {
	t.Helper()
	deadline := time.Now().Add(waitBound)
	for {
		_, text := get(t, url)
		missing := ""
		for series, v := range want {
			if got, ok := sample(text, series); !ok || got != v {
				missing += fmt.Sprintf("\n  %s = %v (present %v), want %v", series, got, ok, v)
			}
		}
		if missing == "" {
			return text
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, %s still has:%s", waitBound, url, missing)
		}
		time.Sleep(20 * time.Millisecond) // a scrape is the only way to see them
	}
}

// TestMetricsAndProbes proves that --metrics-listen serves /healthz,
// /readyz and /metrics, that the metrics follow a good upgrade and a failed
// one, and that `ctl metrics` prints the supervisor's own metrics only.
func TestMetricsAndProbes(t *testing.T) {
	control := filepath.Join(t.TempDir(), "control")
	s := startSupervisor(t, supervisorConfig{binary: pathfindV1,
		flags: goodFlags("--control", control, "--metrics-listen", "127.0.0.1:0")})
	base := "http://" + s.metricsAddr()
	s.waitListening("http")
	s.waitReady(1)
	expectGet(t, base+"/healthz", 200, "ok")
	expectGet(t, base+"/readyz", 200, "ok")
	text := awaitSamples(t, base+"/metrics", map[string]float64{
		"supervisor_up": 1, "supervisor_serving": 1, "supervisor_current_generation": 1,
		`supervisor_state{state="serving"}`:               1,
		`supervisor_workers{ready="true",role="current"}`: 1,
		`supervisor_ready_seconds_count{event="start"}`:   1,
		`supervisor_held_versions{bad="false"}`:           1,
	})
	for _, series := range []string{"go_goroutines", "process_open_fds", "supervisor_fd_store_max_fds"} {
		if _, ok := sample(text, series); !ok {
			t.Errorf("/metrics has no %s", series)
		}
	}

	sent := time.Now()
	s.install(pathfindV2, 0o755)
	if u := s.hup(); !u.OK || u.Gen != 2 {
		t.Fatalf("upgrade: %+v", u)
	}
	s.waitDrained(0, 1)
	text = awaitSamples(t, base+"/metrics", map[string]float64{
		"supervisor_current_generation": 2,
		`supervisor_switches_total{event="upgrade",kind="",result="ok",trigger="sighup"}`: 1,
		`supervisor_ready_seconds_count{event="upgrade"}`:                                 1,
		"supervisor_drain_seconds_count":                                                  1,
		`supervisor_generations{role="draining"}`:                                         0,
	})
	if at, _ := sample(text, "supervisor_current_generation_start_time_seconds"); at < float64(sent.Unix()) || at > float64(time.Now().Unix()+1) {
		t.Errorf("current generation started at %v, want between %v and now", at, sent.Unix())
	}

	// A build that cannot start: the upgrade fails, counted with its kind.
	s.install(pathfindV1, 0o644)
	u := s.hup()
	if u.OK || u.Kind == "" {
		t.Fatalf("upgrade to a file that is not executable: %+v, want a failure with a kind", u)
	}
	awaitSamples(t, base+"/metrics", map[string]float64{
		"supervisor_current_generation": 2, "supervisor_serving": 1,
		`supervisor_switches_total{event="upgrade",kind="` + u.Kind + `",result="failed",trigger="sighup"}`: 1,
	})
	expectGet(t, base+"/readyz", 200, "ok")

	r := ctlOK(t, control, "metrics")
	if v, ok := sample(r.stdout, `supervisor_switches_total{event="upgrade",kind="",result="ok",trigger="sighup"}`); !ok || v != 1 {
		t.Errorf("ctl metrics: the upgrade counted %v (%v), want 1:\n%s", v, ok, r.stdout)
	}
	if strings.Contains(r.stdout, "go_goroutines") || strings.Contains(r.stdout, "process_") {
		t.Errorf("ctl metrics has the Go runtime's or the process's metrics, which node_exporter's textfile collector refuses")
	}
	expectGet(t, base+"/nothing", 404, "")
}

// TestStopDelay proves --stop-delay: on SIGTERM /readyz fails at once while
// the workers still serve, the drain begins only once the delay has passed,
// a SIGUSR2 meanwhile is refused, and a second signal stops at once.
func TestStopDelay(t *testing.T) {
	const delay = 1500 * time.Millisecond
	s := startSupervisor(t, supervisorConfig{binary: pathfindV1,
		flags: goodFlags("--metrics-listen", "127.0.0.1:0", "--stop-delay", delay.String())})
	base := "http://" + s.metricsAddr()
	addr := s.waitListening("http")
	s.waitReady(1)
	expectGet(t, base+"/readyz", 200, "ok")

	mark := s.Log.Len()
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	asked, _ := s.waitFor(mark, waitBound, "the stop's delay", msg("stop requested: /readyz fails now; the drain begins after --stop-delay (another signal: at once)", nil))
	expectGet(t, base+"/readyz", 503, "stopping")
	expectGet(t, base+"/healthz", 200, "ok")
	probe(t, "http://"+addr+"/healthz") // the worker still serves, on a new connection
	drain, _ := s.waitFor(mark, waitBound, "the drain", msg("--stop-delay passed: draining", nil))
	if d := drain.Time().Sub(asked.Time()); d < delay {
		t.Errorf("the drain began %v after the signal, want at least --stop-delay %v", d, delay)
	}
	select {
	case <-s.Done():
	case <-time.After(stopBound):
		t.Fatalf("supervisor did not exit within %v of the drain", stopBound)
	}
	if s.Err() != nil {
		t.Errorf("supervisor exited with %v, want 0", s.Err())
	}

	// A SIGUSR2 during the delay is refused (an exec would lose the stop),
	// and a second stop signal does not wait for the delay.
	s2 := startSupervisor(t, supervisorConfig{binary: pathfindV1,
		flags: goodFlags("--metrics-listen", "127.0.0.1:0", "--stop-delay", "1h", "--self-upgrade", "exec")})
	s2.waitReady(1)
	mark = s2.Log.Len()
	s2.Signal(syscall.SIGTERM)
	s2.waitFor(mark, waitBound, "the stop's delay", msg("stop requested: /readyz fails now; the drain begins after --stop-delay (another signal: at once)", nil))
	s2.Signal(syscall.SIGUSR2)
	refused, _ := s2.waitFor(mark, waitBound, "the refusal", msg("re-exec in place refused: this image serves on", []string{"reason"}))
	if !strings.Contains(refused.Str("reason"), "a stop was asked for") {
		t.Errorf("SIGUSR2 during --stop-delay: %s", refused.Raw)
	}
	s2.Signal(syscall.SIGINT)
	select {
	case <-s2.Done():
	case <-time.After(stopBound):
		t.Fatalf("a second signal did not stop the supervisor within %v", stopBound)
	}
	if s2.Err() != nil {
		t.Errorf("supervisor exited with %v, want 0", s2.Err())
	}
}

// TestMetricsListenInUse: a --metrics-listen address that is taken fails
// the start with one line that names it.
func TestMetricsListenInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := startSupervisor(t, supervisorConfig{binary: pathfindV1,
		flags: goodFlags("--metrics-listen", ln.Addr().String())})
	select {
	case <-s.Done():
	case <-time.After(stopBound):
		t.Fatal("the supervisor started on a taken --metrics-listen address")
	}
	if s.Err() == nil {
		t.Fatal("exit status 0, want a failure")
	}
	want := "--metrics-listen " + ln.Addr().String()
	if _, _, err := s.Log.Find(0, waitBound, "the error", func(e procwatch.Entry) bool {
		return strings.Contains(e.Raw, want) && strings.Contains(e.Raw, "address already in use")
	}); err != nil {
		t.Fatal(err)
	}
}
