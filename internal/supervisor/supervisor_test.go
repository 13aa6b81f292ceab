package supervisor

import (
	"errors"
	"golang.org/x/sys/unix"
	"slices"
	"strconv"

	"github.com/procswitch/supervisor/internal/ready"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestUpgradeStartsNewGenerationThenDrainsOld(t *testing.T) {
	h := startSupervisor(t, "serve", nil)
	at := 0
	h.waitLog(&at, "generation ready", genIs(1))
	old := h.ask()
	for gen := 2; gen <= 4; gen++ {
		if r := h.upgrade(); r.Err != nil || r.Gen != gen {
			t.Fatalf("upgrade %d: %+v", gen, r)
		}
		h.waitLog(&at, "generation drained", genIs(gen-1))
		pid := h.ask()
		if pid == old {
			t.Fatalf("generation %d: old worker %d still answers", gen, old)
		}
		if pidAlive(old) {
			t.Fatalf("old worker %d still runs after its generation drained", old)
		}
		old = pid
	}
}

func TestFailedUpgradeKeepsOldGenerationServing(t *testing.T) {
	for _, tc := range []struct {
		mode, reason string
	}{
		{"exit", "exited before it was ready: exit status 3"},
		{"never-ready", "not ready within"},
		{"child-ready", "not ready within"}, // READY=1 from another PID is not believed
	} {
		t.Run(tc.mode, func(t *testing.T) {
			h := startSupervisor(t, "serve", func(c *Config) { c.ReadyTimeout = 1500 * time.Millisecond })
			at := 0
			h.waitLog(&at, "generation ready", genIs(1))
			serving := h.ask()
			h.setMode(tc.mode)
			r := h.upgrade()
			if r.Err == nil || !strings.Contains(r.Err.Error(), tc.reason) {
				t.Fatalf("upgrade result %+v, want an error with %q", r, tc.reason)
			}
			e := h.waitLog(&at, "upgrade failed", genIs(2))
			if !strings.Contains(e["reason"].(string), tc.reason) {
				t.Errorf("logged reason %q, want %q", e["reason"], tc.reason)
			}
			if pid := h.ask(); pid != serving {
				t.Fatalf("after a failed upgrade %d answers, want the old worker %d", pid, serving)
			}
			h.setMode("serve")
			if r := h.upgrade(); r.Err != nil || r.Gen != 3 {
				t.Fatalf("next good upgrade: %+v", r)
			}
			h.waitLog(&at, "generation drained", genIs(1))
			if pid := h.ask(); pid == serving {
				t.Fatal("the good upgrade did not replace the worker")
			}
		})
	}
}

func TestNotExecutableUpgradeFailsWithReason(t *testing.T) {
	h := startSupervisor(t, "serve", nil)
	at := 0
	h.waitLog(&at, "generation ready", genIs(1))
	path := filepath.Join(t.TempDir(), "worker")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.sup.cfg.Path = path // read by the loop only when an upgrade starts
	r := h.upgrade()
	if r.Err == nil || !strings.Contains(r.Err.Error(), "not executable") {
		t.Fatalf("upgrade to a non-executable file: %+v", r)
	}
}

func TestUpgradesDuringAnUpgradeAreCoalesced(t *testing.T) {
	h := startSupervisor(t, "slow-ready", nil)
	at := 0
	h.waitLog(&at, "generation ready", genIs(1))
	first := h.sup.Upgrade()
	h.waitLog(&at, "upgrade started", genIs(2))
	var more []<-chan Result
	for range 5 {
		more = append(more, h.sup.Upgrade())
	}
	if r := <-first; r.Err != nil || r.Gen != 2 {
		t.Fatalf("first upgrade: %+v", r)
	}
	for i, ch := range more {
		select {
		case r := <-ch:
			if r.Err != nil || r.Gen != 3 {
				t.Fatalf("coalesced request %d: %+v, want generation 3", i, r)
			}
		case <-time.After(waitBound):
			t.Fatal("coalesced upgrade gave no result")
		}
	}
	if n := h.logs.count("upgrade started"); n != 2 {
		t.Fatalf("%d upgrades started for 6 requests, want 2", n)
	}
}

func TestDrainTimeoutKillsStubbornWorker(t *testing.T) {
	h := startSupervisor(t, "ignore-term", func(c *Config) { c.DrainTimeout = 300 * time.Millisecond })
	at := 0
	h.waitLog(&at, "generation ready", genIs(1))
	stubborn := h.ask()
	began := time.Now()
	h.upgrade()
	e := h.waitLog(&at, "generation drained", genIs(1))
	took := time.Since(began)
	if e["killed"] != float64(1) {
		t.Fatalf("drained entry %v, want killed=1", e)
	}
	if took < 300*time.Millisecond {
		t.Fatalf("killed after %v, before the 300ms drain timeout", took)
	}
	if pidAlive(stubborn) {
		t.Fatalf("worker %d ignored the drain signal and still runs", stubborn)
	}
}

func TestCrashedWorkerIsRestarted(t *testing.T) {
	h := startSupervisor(t, "serve", nil)
	at := 0
	h.waitLog(&at, "generation ready", genIs(1))
	victim := h.ask()
	syscall.Kill(victim, syscall.SIGKILL)
	h.waitLog(&at, "worker restarting", nil)
	// The socket stayed open: this connection queues until the new worker accepts.
	if pid := h.ask(); pid == victim {
		t.Fatalf("killed worker %d answered", victim)
	}
}

func TestCrashLoopBacksOff(t *testing.T) {
	h := startSupervisor(t, "exit", func(c *Config) {
		c.RestartMin, c.RestartMax = 10*time.Millisecond, 80*time.Millisecond
		c.StartAttempts = 100
	})
	at := 0
	var delays []float64
	for range 6 {
		delays = append(delays, h.waitLog(&at, "worker restarting", nil)["delay_ms"].(float64))
	}
	want := []float64{10, 20, 40, 80, 80, 80}
	for i := range want {
		if delays[i] != want[i] {
			t.Fatalf("restart delays %v, want %v", delays, want)
		}
	}
}

// A worker that served for RestartMax is healthy: its crash is restarted at
// once (its players wait for nothing else); crashes soon after that back
// off from RestartMin.
func TestHealthyCrashRestartsAtOnce(t *testing.T) {
	const healthyAfter = 3 * time.Second
	h := startSupervisor(t, "serve", func(c *Config) { c.RestartMin, c.RestartMax = 10*time.Millisecond, healthyAfter })
	at := 0
	h.waitLog(&at, "generation ready", genIs(1))
	victim := h.ask()
	// Healthy is a matter of time served: wait that long, from the
	// worker's start (before the ready line).
	time.Sleep(healthyAfter)
	var delays []float64
	for range 3 {
		syscall.Kill(victim, syscall.SIGKILL)
		delays = append(delays, h.waitLog(&at, "worker restarting", nil)["delay_ms"].(float64))
		if victim = h.ask(); !pidAlive(victim) {
			t.Fatalf("restarted worker %d is not running", victim)
		}
	}
	if want := []float64{0, 10, 20}; !slices.Equal(delays, want) {
		t.Fatalf("restart delays %v, want %v", delays, want)
	}
}

func TestWatchdogReplacesHungWorker(t *testing.T) {
	h := startSupervisor(t, "hang", func(c *Config) { c.Watchdog = 200 * time.Millisecond })
	at := 0
	h.waitLog(&at, "generation ready", genIs(1))
	hung := h.waitLog(&at, "worker hung", nil)["pid"].(float64)
	h.setMode("serve")
	h.waitLog(&at, "worker restarting", nil)
	if pid := h.ask(); pid == int(hung) {
		t.Fatal("hung worker still answers")
	}
}

func TestStopDrainsEveryWorker(t *testing.T) {
	h := startSupervisor(t, "serve", func(c *Config) { c.Workers = 3 })
	at := 0
	e := h.waitLog(&at, "generation ready", genIs(1))
	pids := e["pids"].([]any)
	if len(pids) != 3 {
		t.Fatalf("generation of %d workers, want 3", len(pids))
	}
	h.stop()
	for _, p := range pids {
		if pidAlive(int(p.(float64))) {
			t.Fatalf("worker %v outlived the supervisor's stop", p)
		}
	}
	if r := <-h.sup.Upgrade(); !errors.Is(r.Err, ErrStopping) {
		t.Fatalf("upgrade after stop: %+v", r)
	}
}

func TestBlockingAcceptWorkerServes(t *testing.T) {
	// Programs written for systemd may accept(2) and expect it to block:
	// the supervisor passes blocking sockets, as systemd does by default.
	h := startSupervisor(t, "blocking", nil)
	at := 0
	h.waitLog(&at, "generation ready", genIs(1))
	for range 3 {
		h.ask()
	}
	if n := h.logs.count("worker exited"); n != 0 {
		t.Fatalf("a blocking-accept worker exited %d times", n)
	}
}

func TestProbeDecidesReadinessNotReadyMessage(t *testing.T) {
	h := startSupervisor(t, "serve", func(c *Config) {
		c.Ready = ready.Probe{Mode: ready.Delay, Delay: 600 * time.Millisecond}
	})
	at := 0
	e := h.waitLog(&at, "generation ready", genIs(1))
	if ms := e["ready_ms"].(float64); ms < 600 {
		t.Fatalf("ready after %vms with --ready delay:600ms: the worker's READY=1 overrode the probe", ms)
	}
}

func TestWorkersChildrenDieWithIt(t *testing.T) {
	h := startSupervisor(t, "with-child", nil)
	at := 0
	h.waitLog(&at, "generation ready", genIs(1))
	b, err := os.ReadFile(h.mode + ".childpid")
	if err != nil {
		t.Fatal(err)
	}
	child, _ := strconv.Atoi(string(b))
	h.setMode("serve")
	h.upgrade()
	h.waitLog(&at, "generation drained", genIs(1))
	// Wait for the child's exit on a pidfd, bounded.
	pidfd, err := unix.PidfdOpen(child, 0)
	if err != nil {
		return // already gone and reaped
	}
	defer unix.Close(pidfd)
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	if n, _ := unix.Poll(fds, int(waitBound.Milliseconds())); n != 1 {
		t.Fatalf("the drained worker's child %d still runs, holding the listening socket", child)
	}
}
