package test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Bounds of the sd_notify tests.
const (
	watchdogUSec  = 200000 // WATCHDOG_USEC given to the supervisor: a ping every 100ms
	watchdogPings = 5      // pings to see
)

func init() {
	// env serves, on the first passed socket, a JSON report of its
	// environment and of the fds it was started with (see envReport).
	helpers["env"] = helperEnvReport
}

// envReport is what the env helper answers.
type envReport struct {
	PID int      `json:"pid"`
	Env []string `json:"env"`
	FDs []fdInfo `json:"fds"`
}

// get returns the value of the variable key, and whether it is set.
func (r envReport) get(key string) (string, bool) {
	for _, kv := range r.Env {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v, true
		}
	}
	return "", false
}

func helperEnvReport() int {
	return serveReport("env", envReport{PID: os.Getpid(), Env: os.Environ(), FDs: startFDs})
}

// fetchEnv asks the env helper at addr for its report.
func fetchEnv(t *testing.T, addr string) envReport {
	t.Helper()
	client := &http.Client{Timeout: probeTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r envReport
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

// checkWorkerEnv checks that a worker got its own notify socket and none of
// what was meant for the supervisor (its NOTIFY_SOCKET, its watchdog, what a
// predecessor passed it in a self-upgrade); and exactly stdio and the
// listeners as inherited fds.
func checkWorkerEnv(t *testing.T, r envReport, supervisorNotify string, listeners int) {
	t.Helper()
	if v, ok := r.get("NOTIFY_SOCKET"); !ok || v == "" || v == supervisorNotify {
		t.Errorf("worker %d: NOTIFY_SOCKET=%q (set %v), want its own socket, not the supervisor's %s", r.PID, v, ok, supervisorNotify)
	}
	for _, kv := range r.Env {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "WATCHDOG_USEC" || k == "WATCHDOG_PID":
			t.Errorf("worker %d has the supervisor's %s", r.PID, kv)
		case strings.HasPrefix(k, "TABLEFLIP_") || k == "SUPERVISOR_SUCCESSOR_MANIFEST":
			t.Errorf("worker %d has %s, meant for a successor supervisor", r.PID, kv)
		}
	}
	var inherited []string
	for _, f := range r.FDs {
		if !f.CloseOnExec {
			inherited = append(inherited, fmt.Sprintf("%d=%s", f.FD, f.Target))
		}
	}
	if len(inherited) != 3+listeners {
		t.Errorf("worker %d inherited fds %v, want stdio and %d listeners", r.PID, inherited, listeners)
	}
}

// notifyMsg is one datagram on a fake NOTIFY_SOCKET.
type notifyMsg struct {
	At  time.Time
	PID int // the sender, by its credentials
	Raw string
}

func (m notifyMsg) String() string { return fmt.Sprintf("from %d: %q", m.PID, m.Raw) }

// has says whether the message has the line line.
func (m notifyMsg) has(line string) bool {
	for _, l := range strings.Split(m.Raw, "\n") {
		if l == line {
			return true
		}
	}
	return false
}

// get returns the value of the assignment key=..., and whether there is one.
func (m notifyMsg) get(key string) (string, bool) {
	for _, l := range strings.Split(m.Raw, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// status is the STATUS= value, "" without one.
func (m notifyMsg) status() string {
	s, _ := m.get("STATUS")
	return s
}

// notifyRecorder is a fake service manager: a datagram socket that records
// what is sent to it, with each sender's PID (SO_PASSCRED), as systemd
// does.
type notifyRecorder struct {
	path string
	conn *net.UnixConn
	done chan struct{}

	mu      sync.Mutex
	msgs    []notifyMsg
	changed chan struct{} // closed and replaced on every message
}

// listenNotify makes a notify socket and records what arrives until the end
// of the test.
func listenNotify(t *testing.T) *notifyRecorder {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) }); err != nil || serr != nil {
		t.Fatalf("SO_PASSCRED: %v %v", err, serr)
	}
	r := &notifyRecorder{path: path, conn: conn, done: make(chan struct{}), changed: make(chan struct{})}
	go r.read()
	t.Cleanup(func() {
		conn.Close()
		<-r.done
		if t.Failed() {
			for i, m := range r.all() {
				t.Logf("notify %d: %v", i, m)
			}
		}
	})
	return r
}

func (r *notifyRecorder) read() {
	defer close(r.done)
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	for {
		n, oobn, _, _, err := r.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		m := notifyMsg{At: time.Now(), Raw: string(buf[:n])}
		if scms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for i := range scms {
				if cred, err := unix.ParseUnixCredentials(&scms[i]); err == nil {
					m.PID = int(cred.Pid)
				}
			}
		}
		r.mu.Lock()
		r.msgs = append(r.msgs, m)
		close(r.changed)
		r.changed = make(chan struct{})
		r.mu.Unlock()
	}
}

// len is the number of messages so far: the index of the next one.
func (r *notifyRecorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

func (r *notifyRecorder) all() []notifyMsg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]notifyMsg(nil), r.msgs...)
}

// find waits up to d for the first message from index from on that match
// accepts; ok is false at the bound.
func (r *notifyRecorder) find(from int, d time.Duration, match func(notifyMsg) bool) (notifyMsg, int, bool) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		r.mu.Lock()
		msgs, changed := r.msgs[min(from, len(r.msgs)):], r.changed
		r.mu.Unlock()
		for i, m := range msgs {
			if match(m) {
				return m, from + i, true
			}
		}
		from += len(msgs)
		select {
		case <-changed:
		case <-timer.C:
			return notifyMsg{}, from, false
		}
	}
}

// want is find that fails the test at waitBound.
func (r *notifyRecorder) want(t *testing.T, from int, what string, match func(notifyMsg) bool) (notifyMsg, int) {
	t.Helper()
	m, i, ok := r.find(from, waitBound, match)
	if !ok {
		t.Fatalf("no %s on the notify socket within %v", what, waitBound)
	}
	return m, i
}

// has matches a message with the line line.
func has(line string) func(notifyMsg) bool { return func(m notifyMsg) bool { return m.has(line) } }

// isEvent says whether m tells a change of state (not a lone STATUS= or a
// watchdog ping).
func isEvent(m notifyMsg) bool {
	_, mainPID := m.get("MAINPID")
	return m.has("READY=1") || m.has("RELOADING=1") || m.has("STOPPING=1") || mainPID
}

// monotonicUSec is CLOCK_MONOTONIC in microseconds, as MONOTONIC_USEC=.
func monotonicUSec(t *testing.T) int64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Sec*1_000_000 + ts.Nsec/1000
}

// TestNotifySequence proves that a supervisor started with NOTIFY_SOCKET
// tells its service manager, and only it tells it: READY=1 once the first
// generation is ready (its PID file written), RELOADING=1 with
// MONOTONIC_USEC when an upgrade starts, READY=1 with a STATUS= naming the
// new generation when it ends, a STATUS= with FAILED and the reason after a
// failed upgrade, STOPPING=1 on SIGTERM; and that its workers get their own
// NOTIFY_SOCKET, not the supervisor's.
func TestNotifySequence(t *testing.T) {
	rec := listenNotify(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	s := startSupervisor(t, supervisorConfig{binary: helperBin,
		env:   []string{helperEnv + "=env", "NOTIFY_SOCKET=" + rec.path},
		flags: goodFlags("--pid-file", pidFile)})
	addr := s.waitListening("http")
	first := s.waitReady(1)
	readyLine, _ := s.waitFor(0, waitBound, "generation 1 ready", msg("generation ready", []string{"gen"}, genIs(1)))

	ready, i := rec.want(t, 0, "READY=1", has("READY=1"))
	for _, m := range rec.all()[:i] {
		if isEvent(m) {
			t.Errorf("before READY=1: %v", m)
		}
	}
	if want := fmt.Sprintf("generation 1 serving: pid %d", first.pids[0]); !strings.HasPrefix(ready.status(), want) {
		t.Errorf("READY=1 with STATUS=%q, want it to start with %q", ready.status(), want)
	}
	if ready.At.Before(readyLine.Time()) {
		t.Errorf("READY=1 arrived at %v, before generation 1 was ready at %v", ready.At, readyLine.Time())
	}
	if b, err := os.ReadFile(pidFile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(s.PID) {
		t.Errorf("pid file at READY=1: %q, %v; want %d", b, err, s.PID)
	}
	checkWorkerEnv(t, fetchEnv(t, addr), rec.path, 1)

	// A good upgrade: RELOADING=1, then READY=1 naming generation 2.
	before := monotonicUSec(t)
	mark := rec.len()
	u := s.hup()
	if !u.OK {
		t.Fatalf("upgrade failed: %s", u.Reason)
	}
	reloading, i := rec.want(t, mark, "RELOADING=1", has("RELOADING=1"))
	after := monotonicUSec(t)
	usec, err := strconv.ParseInt(func() string { v, _ := reloading.get("MONOTONIC_USEC"); return v }(), 10, 64)
	if err != nil || usec < before || usec > after {
		t.Errorf("RELOADING=1 with MONOTONIC_USEC %d (%v), want CLOCK_MONOTONIC between %d and %d", usec, err, before, after)
	}
	if !strings.Contains(reloading.status(), "upgrading to generation 2") {
		t.Errorf("RELOADING=1 with STATUS=%q, want it to say it upgrades to generation 2", reloading.status())
	}
	done, _ := rec.want(t, i+1, "READY=1 after the upgrade", has("READY=1"))
	for _, w := range []string{fmt.Sprintf("generation 2 serving: pid %d", u.PIDs[0]), "last upgrade: generation 2 ok"} {
		if !strings.Contains(done.status(), w) {
			t.Errorf("READY=1 after the upgrade with STATUS=%q, want it to say %q", done.status(), w)
		}
	}
	s.waitDrained(u.Start, 1)

	// A failed upgrade: RELOADING=1, then READY=1 with the failure.
	s.install(helperBin, 0o644)
	mark = rec.len()
	f := s.hup()
	if f.OK {
		t.Fatalf("upgrade to a non-executable worker succeeded")
	}
	_, i = rec.want(t, mark, "RELOADING=1", has("RELOADING=1"))
	failed, _ := rec.want(t, i+1, "READY=1 after the failed upgrade", has("READY=1"))
	for _, w := range []string{fmt.Sprintf("generation 2 serving: pid %d", u.PIDs[0]), "last upgrade FAILED: ", f.Reason} {
		if !strings.Contains(failed.status(), w) {
			t.Errorf("READY=1 after the failed upgrade with STATUS=%q, want it to say %q", failed.status(), w)
		}
	}

	// SIGTERM: STOPPING=1.
	mark = rec.len()
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-time.After(stopBound):
		t.Fatalf("supervisor did not exit within %v of SIGTERM", stopBound)
	}
	if s.Err() != nil {
		t.Errorf("supervisor exited with %v, want 0", s.Err())
	}
	rec.want(t, mark, "STOPPING=1", has("STOPPING=1"))

	var events []string
	for _, m := range rec.all() {
		if m.PID != s.PID {
			t.Errorf("a process other than the supervisor %d notified: %v", s.PID, m)
		}
		if isEvent(m) {
			events = append(events, strings.Split(m.Raw, "\n")[0])
		}
	}
	want := []string{"READY=1", "RELOADING=1", "READY=1", "RELOADING=1", "READY=1", "STOPPING=1"}
	if strings.Join(events, " ") != strings.Join(want, " ") {
		t.Errorf("notifications %q, want %q", events, want)
	}
}

// TestNotifyWatchdog proves that with WATCHDOG_USEC the supervisor pings
// WATCHDOG=1 every half period, and not when WATCHDOG_PID names another
// process; and that its workers never get its watchdog settings.
func TestNotifyWatchdog(t *testing.T) {
	period := time.Duration(watchdogUSec) * time.Microsecond
	t.Run("ours", func(t *testing.T) {
		rec := listenNotify(t)
		s := startSupervisor(t, supervisorConfig{binary: helperBin, flags: goodFlags(),
			env: []string{helperEnv + "=env", "NOTIFY_SOCKET=" + rec.path, "WATCHDOG_USEC=" + strconv.Itoa(watchdogUSec)}})
		addr := s.waitListening("http")
		s.waitReady(1)
		var pings []notifyMsg
		for from := 0; len(pings) < watchdogPings; {
			m, i := rec.want(t, from, "WATCHDOG=1", has("WATCHDOG=1"))
			pings = append(pings, m)
			from = i + 1
		}
		span := pings[len(pings)-1].At.Sub(pings[0].At)
		t.Logf("%d pings in %v", len(pings), span)
		// Every period/2, give or take: not a flood.
		if min := time.Duration(watchdogPings-1) * period / 2 / 2; span < min {
			t.Errorf("%d pings within %v, want them about %v apart", len(pings), span, period/2)
		}
		for _, m := range pings {
			if m.PID != s.PID || m.Raw != "WATCHDOG=1" {
				t.Errorf("ping %v, want WATCHDOG=1 from the supervisor %d", m, s.PID)
			}
		}
		checkWorkerEnv(t, fetchEnv(t, addr), rec.path, 1)
	})
	// WATCHDOG_PID names another process: an unrelated one, or the
	// supervisor's parent (a wrapper that systemd started, say). Only a
	// supervisor that replaced its parent in a self-upgrade may take its
	// parent's WATCHDOG_PID for its own.
	for _, other := range []struct {
		name string
		pid  int
	}{{"another process's", 1}, {"the parent's", os.Getpid()}} {
		pid := other.pid
		t.Run(other.name, func(t *testing.T) {
			rec := listenNotify(t)
			s := startSupervisor(t, supervisorConfig{binary: helperBin, flags: goodFlags(),
				env: []string{helperEnv + "=env", "NOTIFY_SOCKET=" + rec.path, "WATCHDOG_USEC=" + strconv.Itoa(watchdogUSec),
					"WATCHDOG_PID=" + strconv.Itoa(pid)}})
			s.waitReady(1)
			_, i := rec.want(t, 0, "READY=1", has("READY=1"))
			// Five periods without a ping.
			if m, _, ok := rec.find(i, 5*period, has("WATCHDOG=1")); ok {
				t.Errorf("WATCHDOG_PID=%d names another process than the supervisor %d, yet: %v", pid, s.PID, m)
			}
		})
	}
}
