package supervisor

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/procswitch/supervisor/internal/history"
	"github.com/procswitch/supervisor/internal/notify"
)

// records collects the history a supervisor writes.
type records struct {
	mu      sync.Mutex
	list    []history.Record
	changed chan struct{} // a token after each add; made by the first
}

func (r *records) add(rec history.Record) {
	r.mu.Lock()
	r.list = append(r.list, rec)
	ch := r.signal()
	r.mu.Unlock()
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (r *records) signal() chan struct{} {
	if r.changed == nil {
		r.changed = make(chan struct{}, 1)
	}
	return r.changed
}

// await waits (bounded) until at least n records, drains skipped, are in:
// a record waits for its binary's version, hashed on a goroutine of its own.
func (r *records) await(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.After(waitBound)
	for {
		r.mu.Lock()
		ch := r.signal()
		r.mu.Unlock()
		if got := r.events(); len(got) >= n {
			return got
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("history %v: fewer than %d records within %v", r.events(), n, waitBound)
		}
	}
}

// events lists the records as "event/trigger/result", skipping drains.
func (r *records) events() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.list {
		if rec.Event != history.EventDrained {
			out = append(out, rec.Event+"/"+rec.Trigger+"/"+rec.Result)
		}
	}
	return out
}

func answer(t *testing.T, ch <-chan Result) Result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(waitBound):
		t.Fatalf("no answer within %v", waitBound)
	}
	return Result{}
}

// TestProbationRollsBack: a new generation that crashes on probation is
// rolled back to the held binary of the one before, its own binary is
// marked bad, an upgrade to it from the unchanged path is refused, and the
// history says all of it.
func TestProbationRollsBack(t *testing.T) {
	env := newMachineEnv(t)
	for _, mode := range []string{"overlap", "handover"} {
		t.Run(mode, func(t *testing.T) {
			var recs records
			m := newMachine(t, env, func(c *Config) {
				if mode == "handover" {
					handoverMode(c)
				}
				c.Probation = time.Hour
				c.Record = recs.add
			})
			if mode == "handover" {
				m.steps("ready", "upgrade", "waiting", "saved", "ready")
			} else {
				m.steps("ready", "upgrade", "ready")
			}
			st := m.status()
			if st.State != "probation" || st.ProbationUntil == nil || len(st.Versions) != 2 || !st.Versions[0].Current {
				t.Fatalf("after the upgrade: state %s, probation until %v, versions %+v", st.State, st.ProbationUntil, st.Versions)
			}
			m.steps("crash")
			if mode == "overlap" {
				m.steps("ready") // the rollback generation
			} else {
				m.steps("ready")
			}
			st = m.status()
			if st.State != "serving" || st.Current == nil || st.Current.Gen != 3 {
				t.Fatalf("after the crash on probation: %s", shape(st))
			}
			bad := slices.IndexFunc(st.Versions, func(v VersionStatus) bool { return v.Bad })
			if bad < 0 || !strings.Contains(st.Versions[bad].Reason, "failed on probation") {
				t.Fatalf("no version marked bad: %+v", st.Versions)
			}
			r := answer(t, m.s.Upgrade())
			if KindOf(r.Err) != KindRefused || !strings.Contains(r.Err.Error(), "rolled back from") {
				t.Fatalf("upgrade to the bad binary at the path: %v, want refused", r.Err)
			}
			want := []string{"start/start/ok", "upgrade/sighup/ok", "rollback/probation/ok", "upgrade/sighup/failed"}
			if mode == "handover" {
				want[2] = "rollback/probation/lost" // play since the cutover
			}
			m.status()
			if got := recs.await(t, len(want)); !slices.Equal(got, want) {
				t.Fatalf("history %v, want %v", got, want)
			}
		})
	}
}

// TestProbationEnds: once probation ends, a crash is a plain crash restart.
func TestProbationEnds(t *testing.T) {
	env := newMachineEnv(t)
	m := newMachine(t, env, func(c *Config) { c.Probation = time.Hour })
	m.steps("ready", "upgrade", "ready", "probation-end", "crash")
	if st := m.status(); st.State != "serving" || st.Current.Gen != 2 || st.Upgrading != nil {
		t.Fatalf("crash after probation: %s, want generation 2 restarting", shape(st))
	}
}

// TestRollbackRequest: ctl rollback goes back to the previous binary, or to
// a named held one; refusals say why.
func TestRollbackRequest(t *testing.T) {
	env := newMachineEnv(t)
	m := newMachine(t, env, func(c *Config) { c.KeepVersions = 2 })
	m.steps("ready")
	if r := answer(t, m.s.Rollback(0)); KindOf(r.Err) != KindRefused || !strings.Contains(r.Err.Error(), "no earlier binary") {
		t.Fatalf("rollback with one version: %v", r.Err)
	}
	m.steps("upgrade", "ready", "upgrade", "ready") // generations 1, 2, 3: 1 fell off the list
	if r := answer(t, m.s.Rollback(1)); KindOf(r.Err) != KindRefused || !strings.Contains(r.Err.Error(), "not held") {
		t.Fatalf("rollback to a binary no longer held: %v", r.Err)
	}
	if r := answer(t, m.s.Rollback(3)); KindOf(r.Err) != KindRefused || !strings.Contains(r.Err.Error(), "serving now") {
		t.Fatalf("rollback to the current binary: %v", r.Err)
	}
	reply := m.s.Rollback(2)
	m.settle()
	m.steps("ready")
	if r := answer(t, reply); r.Err != nil || r.Gen != 4 {
		t.Fatalf("rollback to generation 2: gen %d, %v", r.Gen, r.Err)
	}
	if st := m.status(); st.LastUpgrade == nil || !st.LastUpgrade.Rollback || st.Versions[0].Gen != 4 {
		t.Fatalf("after the rollback: last upgrade %+v, versions %+v", st.LastUpgrade, st.Versions)
	}
}

// TestStartAttempts: a first generation that never becomes ready ends Run
// with the reason after StartAttempts starts.
func TestStartAttempts(t *testing.T) {
	env := newMachineEnv(t)
	m := newMachine(t, env, func(c *Config) {
		c.StartAttempts = 3
		c.RestartMin, c.RestartMax = time.Millisecond, time.Millisecond
		c.processes.(*fakeProcesses).exitOnDrain = true
	})
	for i := 0; i < 3; i++ {
		m.waitFor("a worker", func() bool { return m.last.being != nil })
		m.steps("crash")
	}
	err := m.wait()
	if err == nil || !strings.Contains(err.Error(), "did not become ready in 3 attempts") {
		t.Fatalf("Run: %v", err)
	}
	m.ran = new(error) // close: Run's error was this test's
}

// TestSaveFailedKeepsServing: HANDOVER=failed from the old worker kills the
// waiting new one; the old generation serves again, and is upgraded later.
func TestSaveFailedKeepsServing(t *testing.T) {
	env := newMachineEnv(t)
	m := newMachine(t, env, handoverMode)
	m.steps("ready", "upgrade", "waiting")
	up := m.replies["up"]
	v := m.view()
	m.send(notifyEvent{gen: v.saver.gen, msg: notify.Message{PID: v.saver.pid(),
		Vars: map[string]string{"HANDOVER": "failed", "HANDOVER_ERROR": "no space left on device"}}})
	v.saver.proc.(*fakeProcess).failedSaves++
	r := answer(t, up)
	var ue *UpgradeError
	if !errors.As(r.Err, &ue) || ue.Kind != KindSaveFailed || !strings.Contains(ue.Reason, "no space left") {
		t.Fatalf("upgrade result %v, want save-failed naming the reason", r.Err)
	}
	if st := m.status(); st.State != "serving" || st.Current.Gen != 1 || st.Current.Phase != "serving" {
		t.Fatalf("after the failed save: %s", shape(st))
	}
	delete(m.replies, "up")
	m.steps("upgrade", "waiting", "saved", "ready")
	if r := answer(t, m.replies["up"]); r.Err != nil {
		t.Fatalf("the next upgrade: %v", r.Err)
	}
}

// TestSameFileSharesItsEntry: an upgrade that starts the very file that
// serves (a SIGHUP without a new build) shares its held entry and fd, so
// that it pushes no earlier build off the list, and gets no probation:
// there is no other build to go back to.
func TestSameFileSharesItsEntry(t *testing.T) {
	m := newMachine(t, newMachineEnv(t), func(c *Config) { c.Probation = time.Hour })
	m.steps("ready", "upgrade", "ready", "probation-end") // generation 2: a build of its own
	m.request("up", m.s.Upgrade)                          // generation 3: the same file again
	m.steps("ready")
	st := m.status()
	if st.State != "serving" {
		t.Errorf("after an upgrade to the same file: state %s, want serving (no probation)", st.State)
	}
	if len(st.Versions) != 2 || st.Versions[0].Gen != 3 || st.Versions[1].Gen != 1 {
		t.Errorf("held versions %+v, want generation 3's (shared with 2) and generation 1's", st.Versions)
	}
}
