package metrics

import (
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/procswitch/supervisor/internal/history"
	"github.com/procswitch/supervisor/internal/supervisor"
)

func serving(gen int) supervisor.Status {
	return supervisor.Status{State: "serving", FDStore: 3, FDStoreMax: 100,
		Current:  &supervisor.GenStatus{Gen: gen, Started: time.Unix(1700000000, 0), Workers: []supervisor.WorkerStatus{{PID: 10, Ready: true, Standby: &supervisor.StandbyStatus{PID: 11, Waiting: true}}}},
		Draining: []supervisor.GenStatus{{Gen: gen - 1, Workers: []supervisor.WorkerStatus{{PID: 9}}}},
		Versions: []supervisor.VersionStatus{{Gen: gen}, {Gen: gen - 1, Bad: true}}}
}

func has(t *testing.T, text string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(text, "\n"+l+"\n") {
			t.Errorf("no line %q in:\n%s", l, text)
		}
	}
}

// TestText: the gauges come from the status, the counters and histograms
// from the history's records, and Text has neither the Go runtime's nor the
// process's metrics.
func TestText(t *testing.T) {
	m := New(func() (supervisor.Status, bool) { return serving(4), true })
	m.Record(history.Record{Event: history.EventUpgrade, Trigger: history.TriggerSIGHUP, Result: history.ResultOK, ReadyMS: 250, BlackoutMS: 12})
	m.Record(history.Record{Event: history.EventUpgrade, Trigger: history.TriggerCtl, Result: history.ResultFailed, Kind: "ready-timeout", ReadyMS: 9000})
	m.Record(history.Record{Event: history.EventRollback, Trigger: history.TriggerProbation, Result: history.ResultLost, Kind: "state-lost"})
	m.Record(history.Record{Event: history.EventCrash, Trigger: history.TriggerCrash, Result: history.ResultOK})
	m.Record(history.Record{Event: history.EventDrained, Result: history.ResultOK, DrainMS: 1500})
	b, err := m.Text()
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	has(t, text,
		"supervisor_up 1", "supervisor_serving 1", `supervisor_state{state="serving"} 1`, `supervisor_state{state="saving"} 0`,
		"supervisor_current_generation 4", "supervisor_current_generation_start_time_seconds 1.7e+09",
		`supervisor_workers{ready="true",role="current"} 1`, `supervisor_workers{ready="true",role="standby"} 1`,
		`supervisor_workers{ready="false",role="draining"} 1`, `supervisor_generations{role="draining"} 1`,
		`supervisor_held_versions{bad="false"} 1`, `supervisor_held_versions{bad="true"} 1`,
		"supervisor_fd_store_fds 3", "supervisor_fd_store_max_fds 100",
		`supervisor_switches_total{event="upgrade",kind="",result="ok",trigger="sighup"} 1`,
		`supervisor_switches_total{event="upgrade",kind="ready-timeout",result="failed",trigger="ctl"} 1`,
		`supervisor_switches_total{event="rollback",kind="state-lost",result="lost",trigger="probation"} 1`,
		"supervisor_crash_restarts_total 1",
		`supervisor_ready_seconds_count{event="upgrade"} 1`, // the failed one is not a ready time
		`supervisor_ready_seconds_sum{event="upgrade"} 0.25`,
		`supervisor_blackout_seconds_sum{event="upgrade"} 0.012`,
		"supervisor_drain_seconds_sum 1.5")
	if strings.Contains(text, "go_") || strings.Contains(text, "process_") {
		t.Errorf("Text has the runtime's or the process's metrics:\n%s", text)
	}
}

// TestHungLoop: a status that does not answer reads as down within the
// bound, and the scrape says so instead of hanging.
func TestHungLoop(t *testing.T) {
	hung := make(chan struct{})
	defer close(hung)
	status := Bounded(func() (supervisor.Status, bool) { <-hung; return supervisor.Status{}, true }, 50*time.Millisecond)
	done := make(chan []byte, 1)
	go func() {
		b, _ := New(status).Text()
		done <- b
	}()
	select {
	case b := <-done:
		has(t, string(b), "supervisor_up 0")
	case <-time.After(10 * time.Second):
		t.Fatal("a scrape of a hung loop did not return")
	}
}

// TestServing: serving needs a ready worker of the current generation and
// no handover blackout.
func TestServing(t *testing.T) {
	st := serving(2)
	if !Serving(st) {
		t.Error("a ready worker: not serving")
	}
	st.Blackout = true
	if Serving(st) {
		t.Error("in a blackout: serving")
	}
	st = serving(2)
	st.Current.Workers[0].Ready = false
	if Serving(st) {
		t.Error("no ready worker: serving")
	}
	if Serving(supervisor.Status{State: "starting"}) {
		t.Error("no generation: serving")
	}
}

// TestBoundedSharesARead: callers that come while a read is under way get
// its answer, all of them; the loop is asked once.
func TestBoundedSharesARead(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int32
	status := Bounded(func() (supervisor.Status, bool) {
		calls.Add(1)
		<-release
		return serving(3), true
	}, 10*time.Second)
	const callers = 5
	answers := make(chan bool, callers)
	for range callers {
		go func() {
			st, ok := status()
			answers <- ok && st.Current != nil && st.Current.Gen == 3
		}()
	}
	for calls.Load() == 0 {
		runtime.Gosched() // until the read is under way
	}
	close(release)
	for range callers {
		select {
		case ok := <-answers:
			if !ok {
				t.Error("a caller did not get the shared read's answer")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a caller did not return")
		}
	}
	if n := calls.Load(); n > callers || n < 1 {
		t.Errorf("the loop was asked %d times", n)
	}
}
