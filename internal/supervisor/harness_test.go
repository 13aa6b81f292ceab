package supervisor

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/procswitch/supervisor/internal/ready"
	"github.com/procswitch/supervisor/listener"
	"github.com/rs/zerolog"
)

const waitBound = 15 * time.Second

// logRecorder keeps every log line the supervisor writes, decoded, and
// wakes waiters on each.
type logRecorder struct {
	mu      sync.Mutex
	entries []map[string]any
	changed chan struct{}
}

func (r *logRecorder) Write(p []byte) (int, error) {
	var e map[string]any
	if err := json.Unmarshal(p, &e); err != nil {
		return 0, err
	}
	r.mu.Lock()
	r.entries = append(r.entries, e)
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
	return len(p), nil
}

// find returns the first entry from index from on with message msg for
// which match holds, and the index after it.
func (r *logRecorder) find(from int, msg string, match func(map[string]any) bool) (map[string]any, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := from; i < len(r.entries); i++ {
		e := r.entries[i]
		if e["message"] == msg && (match == nil || match(e)) {
			return e, i + 1
		}
	}
	return nil, from
}

func (r *logRecorder) count(msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.entries {
		if e["message"] == msg {
			n++
		}
	}
	return n
}

type harness struct {
	t      *testing.T
	sup    *Supervisor
	logs   *logRecorder
	mode   string // the mode file
	addr   string
	runErr chan error
}

// startSupervisor runs a supervisor whose workers are this test binary in
// the given mode, on a fresh loopback socket.
func startSupervisor(t *testing.T, mode string, tune func(*Config)) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{t: t, logs: &logRecorder{changed: make(chan struct{}, 1)}, mode: filepath.Join(dir, "mode"), runErr: make(chan error, 1)}
	h.setMode(mode)
	spec, err := listener.ParseSpec("tcp://127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	sockets, err := listener.Open([]listener.Spec{spec})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sockets.Close() })
	h.addr = sockets.Sockets[0].Addr.String()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Path:         exe,
		Env:          append(os.Environ(), envHelper+"=1", envModeFile+"="+h.mode),
		Ready:        ready.Probe{Mode: ready.Notify},
		ReadyTimeout: 5 * time.Second,
		DrainTimeout: 5 * time.Second,
		RestartMin:   20 * time.Millisecond,
		RestartMax:   time.Second,
		Sockets:      sockets,
		RuntimeDir:   dir,
		Shim:         exe,
		Log:          zerolog.New(h.logs).With().Timestamp().Logger(),
	}
	if tune != nil {
		tune(&cfg)
	}
	h.sup, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	go func() { h.runErr <- h.sup.Run() }()
	t.Cleanup(h.dumpLogs)
	t.Cleanup(h.stop)
	return h
}

func (h *harness) setMode(mode string) {
	h.t.Helper()
	if err := os.WriteFile(h.mode, []byte(mode), 0o600); err != nil {
		h.t.Fatal(err)
	}
}

// stop stops the supervisor and waits for Run to return.
func (h *harness) stop() {
	h.sup.Stop()
	select {
	case err := <-h.runErr:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
		h.runErr <- err // later calls return at once
	case <-time.After(waitBound):
		h.t.Errorf("supervisor did not stop within %v", waitBound)
	}
}

// waitLog waits, bounded, for a log entry with message msg after position
// *from, for which match holds, and moves *from past it.
func (h *harness) waitLog(from *int, msg string, match func(map[string]any) bool) map[string]any {
	h.t.Helper()
	deadline := time.After(waitBound)
	for {
		if e, next := h.logs.find(*from, msg, match); e != nil {
			*from = next
			return e
		}
		select {
		case <-h.logs.changed:
		case <-deadline:
			h.t.Fatalf("no %q log entry within %v", msg, waitBound)
		}
	}
}

func genIs(n int) func(map[string]any) bool {
	return func(e map[string]any) bool { return e["gen"] == float64(n) }
}

// ask connects to the shared socket and returns the PID that answered.
func (h *harness) ask() int {
	h.t.Helper()
	c, err := net.DialTimeout("tcp", h.addr, 2*time.Second)
	if err != nil {
		h.t.Fatalf("connect: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		h.t.Fatalf("read: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		h.t.Fatalf("answer %q: %v", line, err)
	}
	return pid
}

func (h *harness) upgrade() Result {
	h.t.Helper()
	select {
	case r := <-h.sup.Upgrade():
		return r
	case <-time.After(waitBound):
		h.t.Fatalf("upgrade gave no result within %v", waitBound)
	}
	return Result{}
}

func pidAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(b))
	return len(fields) > 2 && fields[2] != "Z"
}

// dumpLogs shows the supervisor's log when a test failed.
func (h *harness) dumpLogs() {
	if !h.t.Failed() {
		return
	}
	h.logs.mu.Lock()
	defer h.logs.mu.Unlock()
	for _, e := range h.logs.entries {
		h.t.Logf("log: %v", e)
	}
}
