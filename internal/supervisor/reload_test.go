package supervisor

import (
	"strings"
	"syscall"
	"testing"

	"github.com/procswitch/supervisor/internal/history"
)

// TestReloadWorkers: with two workers, the reload waits for both; one
// failure fails it with that worker's reason, and VERSION= is kept per
// worker (the history is checked end to end: test/reload_test.go); one worker that does not catch the signal refuses the reload with
// nobody signalled; an upgrade asked for during a reload starts after it.
func TestReloadWorkers(t *testing.T) {
	env := newMachineEnv(t)
	m := newMachine(t, env, func(c *Config) { c.Workers = 2 })
	g := m.s.current
	for _, sl := range g.slots {
		m.notify(sl.worker, "READY", "1")
	}
	a, b := g.slots[0].worker, g.slots[1].worker

	m.request("reload", func() <-chan Result { return m.s.Reload(history.TriggerCtl) })
	for _, w := range []*worker{a, b} {
		if n := w.proc.(*fakeProcess).signalled(syscall.SIGHUP); n != 1 {
			t.Fatalf("worker %d sent SIGHUP %d times, want once", w.pid(), n)
		}
	}
	m.request("up", m.s.Upgrade) // queued behind the reload
	m.notifyVars(a, map[string]string{"RELOADING": "1", "MONOTONIC_USEC": "1"})
	m.notifyVars(a, map[string]string{"READY": "1", "VERSION": "v2"})
	if st := m.status(); st.State != "reloading" || !st.Current.Workers[1].Reloading || st.Current.Workers[0].Version != "v2" {
		t.Fatalf("after one answer: %+v, want reloading, worker 1 still reloading, worker 0 at v2", st)
	}
	m.notifyVars(b, map[string]string{"RELOADING": "1", "MONOTONIC_USEC": "1"})
	m.notifyVars(b, map[string]string{"RELOAD": "failed", "RELOAD_ERROR": "bad.lua:3: syntax error"})
	r := <-m.replies["reload"]
	if KindOf(r.Err) != KindReloadFailed || !strings.Contains(r.Err.Error(), "bad.lua:3: syntax error") || r.Version != "v2" {
		t.Errorf("reload: %+v (%v), want reload-failed with the worker's reason, version v2", r, r.Err)
	}
	if st := m.status(); st.State != "upgrading" || st.LastReload == nil || st.LastReload.OK {
		t.Errorf("after the reload: state %s, last reload %+v; want the queued upgrade running, the reload failed", st.State, st.LastReload)
	}
}

// TestReloadRefusedNoneSignalled: one worker that does not catch the reload
// signal refuses the reload before any worker is signalled.
func TestReloadRefusedNoneSignalled(t *testing.T) {
	env := newMachineEnv(t)
	m := newMachine(t, env, func(c *Config) { c.Workers = 2 })
	g := m.s.current
	for _, sl := range g.slots {
		m.notify(sl.worker, "READY", "1")
	}
	p := g.slots[1].worker.proc.(*fakeProcess)
	p.mu.Lock()
	p.noReload = true
	p.mu.Unlock()
	r := <-m.s.Reload(history.TriggerCtl)
	if KindOf(r.Err) != KindRefused || !strings.Contains(r.Err.Error(), "does not handle SIGHUP: it does not speak the reload contract") {
		t.Errorf("reload: %v, want refused: does not handle SIGHUP", r.Err)
	}
	for _, sl := range g.slots {
		if n := sl.worker.proc.(*fakeProcess).signalled(syscall.SIGHUP); n != 0 {
			t.Errorf("worker %d sent SIGHUP %d times, want never", sl.worker.pid(), n)
		}
	}
	if st := m.status(); st.State != "serving" {
		t.Errorf("state %s, want serving", st.State)
	}
}
