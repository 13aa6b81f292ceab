package game

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/procswitch/supervisor/test/procwatch"
)

// TestSelfUpgradeKeepsPlayers: in handover mode, SIGUSR2 replaces the
// supervisor itself while 100 bots play: the worker saves, its connections
// travel to the new supervisor, whose first worker restores both. Twice in a
// row, no bot's connection closes, every reply follows from the bot's own
// history, the stock is continuous, the PID file names each new supervisor,
// and the old one exits 0.
func TestSelfUpgradeKeepsPlayers(t *testing.T) {
	const nbots, upgrades = 100, 2
	pidFile := filepath.Join(t.TempDir(), "supervisor.pid")
	s := startSupervised(t, supervisedOpts{
		bin:        bins.buggy,
		flags:      []string{"--pid-file", pidFile, "--ready-timeout", "30s"},
		workerArgs: []string{"--autosave", "500ms", "--stock", fmt.Sprint(bigStock)},
	})
	_, pid := s.ready(t)
	ledger, _, probe, bots, tm := startPlaying(t, s.addr, nbots)

	supervisorPID := s.pid
	var last *procwatch.ExitWatch
	for u := 1; u <= upgrades; u++ {
		if got := readPID(t, pidFile); got != supervisorPID {
			t.Fatalf("PID file says %d, want %d", got, supervisorPID)
		}
		old, err := procwatch.WatchExit(supervisorPID)
		if err != nil {
			t.Fatal(err)
		}
		mark := s.at
		if err := syscall.Kill(supervisorPID, syscall.SIGUSR2); err != nil {
			t.Fatal(err)
		}
		took := s.find2(t, "self-upgrade: this supervisor is ready and takes over", func(l line) bool { return l.Int("pid") != supervisorPID })
		next := took.Int("pid")
		restored := s.find2(t, "self-upgrade: the new supervisor's worker restored the snapshot and connections", nil)
		if got := restored.Int("connections"); got != nbots+1 {
			t.Errorf("self-upgrade %d: %d connections passed, want %d", u, got, nbots+1)
		}
		s.at = mark // the new supervisor's worker was ready before it took over
		ready := s.find2(t, "generation ready", nil)
		pid = ready.Ints("pids")[0]
		s.find2(t, "self-upgrade: the new supervisor's worker restored the snapshot and connections", nil)
		if u == 1 {
			// The first is the harness's child: it reaps it.
			if code := s.wait(); code != 0 {
				t.Errorf("old supervisor %d exited with %d, want 0", supervisorPID, code)
			}
		} else if ws, err := old.WaitStatus(stopBound); err != nil || ws.ExitStatus() != 0 {
			t.Errorf("old supervisor %d: %v, status %v; want exit 0", supervisorPID, err, ws)
		}
		old.Close()
		if got := readPID(t, pidFile); got != next {
			t.Errorf("PID file says %d after the self-upgrade, want the new supervisor's %d", got, next)
		}
		supervisorPID = next
		probe.c.expect(t, "STATUS", probe.status(buggyVersion, pid))
		tm.waitPast(t, tm.marks(), 3)
		t.Logf("self-upgrade %d: supervisor %d, worker %d, %d connections; %.1f ms from the save to the new worker ready",
			u, next, pid, restored.Int("connections"), num(restored, "successor_ready_ms"))
	}

	if err := tm.halt(); err != nil {
		t.Fatal(err)
	}
	for _, b := range append(bots, probe) {
		b.c.expect(t, "STATUS", b.status(buggyVersion, pid))
	}
	ledger.check(t, probe.c)

	// The last supervisor is ours to stop: the harness follows the first.
	if last, _ = procwatch.WatchExit(supervisorPID); last == nil {
		t.Fatalf("cannot watch supervisor %d", supervisorPID)
	}
	defer last.Close()
	syscall.Kill(supervisorPID, syscall.SIGTERM)
	if ws, err := last.WaitStatus(stopBound); err != nil || ws.ExitStatus() != 0 {
		t.Errorf("last supervisor %d after SIGTERM: %v, status %v; want exit 0", supervisorPID, err, ws)
	}
}

// find2 waits for the next line with msg, from the cursor on, across the
// successors' output (which shares the first supervisor's pipe).
func (s *supervised) find2(t *testing.T, msg string, cond func(line) bool) line {
	t.Helper()
	l, i, err := s.Log.Find(s.at, waitBound, fmt.Sprintf("%q", msg), func(l line) bool {
		return l.Msg() == msg && (cond == nil || cond(l))
	})
	if err != nil {
		t.Fatal(err)
	}
	s.at = i + 1
	return l
}

func num(l line, key string) float64 {
	v, _ := l.Num(key)
	return v
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("PID file %s: %q", path, b)
	}
	return pid
}
