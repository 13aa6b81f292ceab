package systemd_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Bounds of systemctl calls: above the units' own timeouts (TimeoutStartSec
// 90s, which also bounds ExecReload; TimeoutStopSec 45s), so that systemd's
// verdict, not ours, ends a slow job.
const (
	startBound  = 2 * time.Minute
	reloadBound = 2 * time.Minute
	stopBound   = 90 * time.Second
)

// startUnit starts a unit (systemctl start blocks until it is ready: READY=1
// for Type=notify) and stops it at the end of the test.
func startUnit(t *testing.T, c *container, unit string) {
	t.Helper()
	t.Cleanup(func() { stopUnit(t, c, unit) })
	if r := c.systemctl(startBound, "start", unit); r.err != nil || r.code != 0 {
		t.Fatalf("%v\n%s", r, c.diag(unit))
	}
}

// stopUnit stops a unit and clears a failed state, so that the next test
// starts from scratch.
func stopUnit(t *testing.T, c *container, unit string) {
	if r := c.systemctl(stopBound, "stop", unit); r.err != nil || r.code != 0 {
		t.Errorf("stop: %v\n%s", r, c.diag(unit))
	}
	c.systemctl(30*time.Second, "reset-failed", unit)
}

// stoppedCleanly checks systemd's verdict on a stopped invocation, from its
// journal (an inactive unit may be unloaded, its properties gone): it was
// deactivated successfully, nothing was killed, the main process exited 0.
func (c *container) stoppedCleanly(t *testing.T, unit, invocation string) {
	t.Helper()
	var ok bool
	for _, e := range c.journalOf(t, invocation) {
		switch {
		case e.Raw == unit+": Deactivated successfully.":
			ok = true
		case strings.HasPrefix(e.Raw, unit+": Killing process"), strings.HasPrefix(e.Raw, unit+": Failed with result"),
			strings.HasPrefix(e.Raw, unit+": Main process exited"), strings.Contains(e.Raw, "timed out"):
			t.Errorf("systemd: %s", e.Raw)
		}
	}
	if !ok {
		t.Errorf("no %q in the journal of the stopped invocation\n%s", unit+": Deactivated successfully.", c.diag(unit))
	}
}

// diag is what an operator would look at: systemctl status and the journal.
func (c *container) diag(unit string) string {
	st := c.systemctl(30*time.Second, "status", "--no-pager", "-l", "-n", "0", unit)
	j := c.exec(30*time.Second, "journalctl", "--no-pager", "-o", "cat", "-n", "40", "-u", unit)
	return fmt.Sprintf("systemctl status %s:\n%s\njournalctl -u %s (last 40):\n%s", unit, st.stdout, unit, j.stdout)
}

// mainPID is the unit's MainPID.
func (c *container) mainPID(t *testing.T, unit string) int {
	t.Helper()
	pid, err := strconv.Atoi(c.show(t, unit, "MainPID"))
	if err != nil || pid == 0 {
		t.Fatalf("%s: MainPID %q\n%s", unit, c.show(t, unit, "MainPID"), c.diag(unit))
	}
	return pid
}

// procStatus reads /proc/PID/status inside the container.
func (c *container) procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	out := c.must(t, 30*time.Second, "cat", fmt.Sprintf("/proc/%d/status", pid))
	m := make(map[string]string)
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// alive says whether a process exists inside the container.
func (c *container) alive(pid int) bool {
	r := c.exec(30*time.Second, "test", "-d", fmt.Sprintf("/proc/%d", pid))
	return r.err == nil && r.code == 0
}

// loadResult is loadclient's http result.
type loadResult struct {
	Requests int            `json:"requests"`
	Failed   int            `json:"failed"`
	ByClass  map[string]int `json:"by_class"`
	ByPID    map[string]int `json:"by_pid"`
	Versions map[string]int `json:"versions"`
	Errors   []struct {
		Class   string  `json:"class"`
		Err     string  `json:"err"`
		StartMS float64 `json:"start_ms"`
		Mode    string  `json:"mode"`
	} `json:"errors"`
	Marked                  bool     `json:"marked"`
	BeforeMark              int      `json:"before_mark"`
	BeforeMarkFailed        int      `json:"before_mark_failed"`
	InFlightAtMark          int      `json:"in_flight_at_mark"`
	FirstFailureAfterMarkMS *float64 `json:"first_failure_after_mark_ms"`
}

func (r loadResult) String() string {
	s := fmt.Sprintf("%d requests, %d failed %v, by worker pid %v, versions %v", r.Requests, r.Failed, r.ByClass, r.ByPID, r.Versions)
	for _, e := range r.Errors {
		s += fmt.Sprintf("\n  %s at %.1f ms (%s client): %s", e.Class, e.StartMS, e.Mode, e.Err)
	}
	return s
}

// serving is loadclient's first line once a request succeeded.
type serving struct {
	PID     int    `json:"pid"`
	Version string `json:"version"`
}

// startLoad starts HTTP load inside the container and waits until it is
// served: 2 keep-alive clients and 2 that connect per request.
func (c *container) startLoad(t *testing.T, url string) (*bg, serving) {
	t.Helper()
	l := c.start(t, "load on "+url, prefix+"/loadclient", "http", "-url", url, "-keepalive", "2", "-newconn", "2", "-max", "5m")
	var s serving
	l.event(t, "serving", 2*time.Minute, &s)
	return l, s
}

// finishLoad stops the load and returns its result.
func finishLoad(t *testing.T, l *bg) loadResult {
	t.Helper()
	var r loadResult
	l.finish(t, &r)
	t.Logf("load: %v", r)
	return r
}
