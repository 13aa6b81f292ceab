package supervisor

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/procswitch/supervisor/internal/history"
	"github.com/procswitch/supervisor/internal/notify"
	"github.com/procswitch/supervisor/internal/proc"
)

// TestMachine walks the state machine's table (machine.go) in-process, with
// fake workers and a fake successor (fake_test.go). For each state a fresh
// supervisor is driven there by a setup, a sequence of the table's own
// events; then one event is applied and its outcome checked. The loop checks
// the invariants after every event it handles, setup and teardown included.
func TestMachine(t *testing.T) {
	env := newMachineEnv(t)
	for _, mode := range []string{"overlap", "handover"} {
		t.Run(mode, func(t *testing.T) {
			for _, su := range machineSetups {
				if !strings.Contains(su.modes, mode) {
					continue
				}
				t.Run(su.name, func(t *testing.T) {
					for _, row := range machineTable {
						t.Run(row.event, func(t *testing.T) {
							m := newMachine(t, env, func(c *Config) {
								if mode == "handover" {
									handoverMode(c)
								}
								if su.stored {
									storeOne(t, c)
								}
								if strings.HasPrefix(su.name, "probation") {
									c.Probation = time.Hour // ended by the probation-end event
								}
							})
							m.run(su, row.event, outcome(row.want, mode, su.name))
						})
					}
				})
			}
		})
	}
}

// TestMachineStopEndsOnceDrained: with workers that exit at the drain
// signal, as real ones do, a stop ends Run by itself, whatever it drains.
func TestMachineStopEndsOnceDrained(t *testing.T) {
	env := newMachineEnv(t)
	for _, steps := range [][]string{nil, {"ready"}, {"ready", "upgrade"}} {
		m := newMachine(t, env, func(c *Config) { c.processes.(*fakeProcesses).exitOnDrain = true })
		m.steps(steps...)
		m.steps("stop")
		if err := m.wait(); err != nil {
			t.Fatalf("after %v and a stop, Run: %v", steps, err)
		}
		for _, p := range m.procs.all() {
			if p.Status() != exitStatus(0) {
				t.Errorf("after %v and a stop, %v: %s, want a drained exit", steps, p, proc.Describe(p.Status()))
			}
		}
	}
}

type machineSetup struct {
	name, state string
	modes       string // "overlap", "handover" or both
	stored      bool   // the first generation starts on stored connections
	steps       []string
}

// machineSetups are the ways into each state. The name is the state's, with
// a suffix where a state is reached in more than one way that matters.
var machineSetups = []machineSetup{
	{"starting", "starting", "overlap handover", false, nil},
	{"starting-stored", "starting", "handover", true, nil},
	{"serving", "serving", "overlap handover", false, []string{"ready"}},
	{"upgrading", "upgrading", "overlap handover", false, []string{"ready", "upgrade"}},
	{"upgrading-early", "upgrading", "overlap handover", false, []string{"upgrade"}}, // the first generation is not ready yet
	{"saving", "saving", "handover", false, []string{"ready", "upgrade", "waiting"}},
	{"restoring", "restoring", "handover", false, []string{"ready", "upgrade", "waiting", "saved"}},
	{"rolling-back", "rolling-back", "handover", false, []string{"ready", "upgrade", "waiting", "saved", "next-exit"}},
	{"rolling-back-saving", "rolling-back", "handover", false, []string{"ready", "upgrade", "waiting", "next-exit"}},
	{"self-upgrading", "self-upgrading", "overlap", false, []string{"ready", "self-upgrade"}},
	{"self-upgrading", "self-upgrading", "handover", false, []string{"ready", "self-upgrade", "successor-waiting", "saved"}},
	{"self-upgrading-early", "self-upgrading", "handover", false, []string{"ready", "self-upgrade"}}, // the successor's worker initialises
	{"self-upgrading-saving", "self-upgrading", "handover", false, []string{"ready", "self-upgrade", "successor-waiting"}},
	{"self-upgrading-stopping", "self-upgrading", "overlap", false, []string{"ready", "self-upgrade", "stop"}},
	{"self-upgrading-stopping", "self-upgrading", "handover", false, []string{"ready", "self-upgrade", "successor-waiting", "saved", "stop"}},
	{"retired", "retired", "overlap", false, []string{"ready", "self-upgrade", "successor-ok"}},
	{"retired", "retired", "handover", false, []string{"ready", "self-upgrade", "successor-waiting", "saved", "successor-ok"}},
	{"stopping", "stopping", "overlap handover", false, []string{"ready", "stop"}},
	{"reloading", "reloading", "overlap handover", false, []string{"ready", "reload"}},
	{"reloading-acked", "reloading", "overlap handover", false, []string{"ready", "reload", "reloading"}}, // RELOADING=1 came
	// Setups named probation… run with Config.Probation on.
	{"probation", "probation", "overlap", false, []string{"ready", "upgrade", "ready"}},
	{"probation", "probation", "handover", false, []string{"ready", "upgrade", "waiting", "saved", "ready"}},
	{"probation-rollback", "upgrading", "overlap", false, []string{"ready", "upgrade", "ready", "crash"}},
	{"probation-rollback", "rolling-back", "handover", false, []string{"ready", "upgrade", "waiting", "saved", "ready", "crash"}},
}

// machineTable is what each event does in each setup's state. An outcome is:
//
//	"-"          nothing changes: state, last generation number, current and
//	             next generations and their workers' readiness as before; no
//	             request answered
//	"="          the state is as before (a worker may have exited)
//	"S …"        the state is S, and (any of, in any order):
//	  cur=N      the current generation is N
//	  up=K       the upgrade the setup asked for is answered: K is the kind,
//	             or ok; "+rb": rolled back
//	  self=K     likewise the setup's self-upgrade
//	  req=K      likewise the event's own request
//	  +successor a successor supervisor is started
//	"done"       Run returns
//	"n/a"        the pair cannot be built (the event's needs say why): skipped
//
// A request not named is still waiting (started, or queued), and no
// successor starts unless named. Keys are "mode/setup", else "setup", else
// "*", in that order.
var machineTable = []struct {
	event string
	want  map[string]string
}{
	{"upgrade", upgradeRow("upgrading", "upgrading", "upgrading")},
	{"rollback", map[string]string{"*": "- req=refused", "probation": "upgrading"}},
	{"reload", map[string]string{"*": "- req=refused", "serving": "reloading", "probation": "reloading"}},
	{"reload-unsupported", map[string]string{"*": "- req=refused"}}, // a worker that does not catch the signal
	{"reloading", map[string]string{"*": "-"}},                      // RELOADING=1 alone: the reload goes on
	{"reload-done", map[string]string{"*": "n/a", // RELOADING=1 then READY=1, VERSION=
		"reloading": "serving reload=ok", "reloading-acked": "serving reload=ok"}},
	{"reload-failed", map[string]string{"*": "-", // RELOAD=failed outside a reload changes nothing
		"reloading": "serving reload=reload-failed", "reloading-acked": "serving reload=reload-failed"}},
	{"reload-timeout", map[string]string{"*": "n/a",
		"reloading": "serving reload=reload-timeout", "reloading-acked": "serving reload=reload-timeout"}},
	{"save-failed", map[string]string{"*": "-", // HANDOVER=failed from the worker that saves, or would
		"saving": "serving up=save-failed", "rolling-back-saving": "serving",
		"handover/stopping": "done", "handover/retired": "done", // killed: it would serve on until the drain timeout
		"self-upgrading-saving": "serving self=save-failed"}},
	{"successor-waiting", map[string]string{"*": "n/a", "self-upgrading-early": "self-upgrading"}},
	{"probation-end", map[string]string{"*": "-", "probation": "serving"}},
	{"upgrade-not-executable", upgradeRow("starting req=not-executable", "serving req=not-executable", "serving req=not-executable")},
	{"upgrade-start-fails", upgradeRow("starting req=start-failed", "serving req=start-failed", "serving req=start-failed")},
	{"self-upgrade", map[string]string{"*": "- req=refused",
		"serving": "self-upgrading +successor", "probation": "self-upgrading +successor"}},
	{"self-upgrade-unprepared", map[string]string{"*": "- req=refused"}},
	// a re-exec in place (reexec.go), whose exec fails: taken only in
	// serving, where the image serves on; refused everywhere else
	{"reexec", map[string]string{"*": "- req=refused", "serving": "- req=start-failed",
		"probation": "- req=refused", // the previous generation still drains (the fakes do not exit)
	}},
	{"stop", map[string]string{"*": "stopping",
		"upgrading": "stopping up=cancelled", "upgrading-early": "stopping up=cancelled",
		"saving": "stopping up=cancelled", "restoring": "stopping up=cancelled",
		"self-upgrading": "-", "self-upgrading-early": "-", "self-upgrading-saving": "-", "self-upgrading-stopping": "-",
		"retired": "-", "stopping": "-",
		"reloading": "stopping reload=cancelled", "reloading-acked": "stopping reload=cancelled",
	}},
	{"ready", map[string]string{"*": "-", // the worker of the generation being started; else the newest one, ready already
		// reloading: READY=1 before RELOADING=1 is ignored; reloading-acked: it answers the reload
		"reloading-acked": "serving reload=ok",
		"starting":        "serving", "starting-stored": "serving", "rolling-back": "serving",
		"upgrading": "serving up=ok", "upgrading-early": "serving up=ok", "restoring": "serving up=ok",
		"saving":             "-", // READY=1 before GO is ignored
		"handover/upgrading": "-", "handover/upgrading-early": "-",
		"overlap/probation-rollback": "serving", "handover/probation-rollback": "serving"}},
	{"next-exit", map[string]string{"*": "n/a",
		"upgrading": "serving up=exited-before-ready", "upgrading-early": "starting up=exited-before-ready",
		"saving": "rolling-back cur=1 up=exited-before-ready+rb", "restoring": "rolling-back cur=3 up=restore-failed+rb",
		"overlap/probation-rollback": "serving"}}, // the bad generation restarts: nothing else is left
	{"ready-timeout", map[string]string{"*": "-", // the timer armed at start; in saving and restoring it is stale
		"starting": "=", "starting-stored": "=", "rolling-back": "=", // killed; the crash restarts it
		"upgrading": "serving up=not-ready-in-time", "upgrading-early": "starting up=not-ready-in-time",
		"overlap/probation-rollback": "serving", "handover/probation-rollback": "="}},
	{"go-timeout", map[string]string{"*": "n/a",
		"restoring": "rolling-back cur=3 up=restore-failed+rb", "rolling-back": "-",
		"handover/probation": "-", "handover/probation-rollback": "-"}}, // stale: from the setup's handover
	{"pass-failed", map[string]string{"*": "n/a",
		"restoring": "rolling-back cur=3 up=pass-failed+rb", "rolling-back": "-",
		"handover/probation": "-", "handover/probation-rollback": "-"}},
	{"waiting", map[string]string{"*": "n/a",
		"handover/upgrading":       "saving",
		"handover/upgrading-early": "restoring", // the old worker, not ready, had nothing to save: stopped
		"saving":                   "-", "restoring": "-", "rolling-back": "-", "rolling-back-saving": "-",
		"handover/probation": "-", "handover/probation-rollback": "-"}},
	{"saved", map[string]string{"*": "-", // from the worker that saves, or would
		"saving": "restoring", "rolling-back-saving": "rolling-back cur=3", "self-upgrading-saving": "self-upgrading"}},
	{"old-exit", map[string]string{"*": "n/a",
		"saving": "restoring", "restoring": "=", "rolling-back": "-", "rolling-back-saving": "rolling-back cur=3",
		"handover/self-upgrading": "=", "self-upgrading-saving": "self-upgrading",
		"handover/self-upgrading-stopping": "=", "retired": "done", "stopping": "done",
		"probation": "=", "probation-rollback": "="}},
	{"crash", map[string]string{"*": "=", // restarted, with back-off; n/a where it drains (old-exit)
		"reloading": "serving reload=reload-failed", "reloading-acked": "serving reload=reload-failed",
		"saving": "n/a", "restoring": "n/a", "rolling-back-saving": "n/a", "handover/self-upgrading": "n/a",
		"self-upgrading-saving": "n/a", "handover/self-upgrading-stopping": "n/a", "retired": "n/a", "stopping": "n/a",
		"overlap/probation": "upgrading", "handover/probation": "rolling-back", // rolled back on probation
		"overlap/probation-rollback":  "n/a", // the bad generation's worker is gone
		"handover/probation-rollback": "="}}, // the rolled-back generation's: restarted
	{"successor-ok", map[string]string{"*": "-", // a late answer, where no successor is starting
		"self-upgrading": "retired self=ok", "self-upgrading-stopping": "retired self=ok",
		"self-upgrading-early":  "retired self=state-lost", // it never asked for the worker's state
		"self-upgrading-saving": "n/a"}},
	{"successor-failed", map[string]string{"*": "-",
		"overlap/self-upgrading":  "serving self=successor-failed",
		"handover/self-upgrading": "rolling-back cur=2 self=successor-failed+rb",
		"self-upgrading-early":    "serving self=successor-failed", // the worker never stopped serving
		"self-upgrading-stopping": "stopping self=successor-failed", "self-upgrading-saving": "n/a"}},
}

// upgradeRow is an upgrade request's row: how it ends in starting and in
// serving; queued while an upgrade or a rollback runs, refused otherwise.
func upgradeRow(starting, serving, probation string) map[string]string {
	row := map[string]string{"*": "- req=refused", "starting": starting, "serving": serving, "probation": probation}
	for _, st := range []string{"starting-stored", "reloading", "reloading-acked", "upgrading", "upgrading-early", "saving", "restoring",
		"rolling-back", "rolling-back-saving", "probation-rollback"} {
		row[st] = "-"
	}
	return row
}

func outcome(want map[string]string, mode, setup string) string {
	for _, k := range []string{mode + "/" + setup, setup, "*"} {
		if w, ok := want[k]; ok {
			return w
		}
	}
	return "no outcome in the table"
}

// machineEvents builds each event from what the loop has (a view): needs
// says why it cannot be built, or "".
var machineEvents = map[string]struct {
	needs func(v view) string
	apply func(m *machine, v view)
}{
	"upgrade": {always, func(m *machine, v view) { m.reinstall(); m.request("up", m.s.Upgrade) }},
	"upgrade-not-executable": {always, func(m *machine, v view) {
		if err := os.Chmod(m.path, 0o644); err != nil {
			m.t.Fatal(err)
		}
		m.t.Cleanup(func() { os.Chmod(m.path, 0o755) })
		m.request("up", m.s.Upgrade)
	}},
	"upgrade-start-fails": {always, func(m *machine, v view) {
		m.procs.failStartOf(v.lastGen + 1)
		m.request("up", m.s.Upgrade)
	}},
	"self-upgrade": {always, func(m *machine, v view) { m.request("self", m.s.SelfUpgrade) }},
	"reexec": {always, func(m *machine, v view) {
		// Its quiesce handles the events that come meanwhile, the harness's
		// status requests too: wait for the answer itself.
		m.request("req", func() <-chan Result {
			answered := make(chan Result, 1)
			select {
			case r := <-m.s.ReexecInPlace():
				answered <- r
			case <-time.After(waitBound):
				m.t.Fatalf("no answer to the re-exec within %v", waitBound)
			}
			return answered
		})
	}},
	"self-upgrade-unprepared": {always, func(m *machine, v view) {
		m.succ.setPrepareErr(errors.New("fake: not now"))
		m.request("self", m.s.SelfUpgrade)
	}},
	"stop": {always, func(m *machine, v view) { m.s.Stop(); m.settle() }},
	"reload": {always, func(m *machine, v view) {
		m.request("reload", func() <-chan Result { return m.s.Reload(history.TriggerCtl) })
	}},
	"reload-unsupported": {always, func(m *machine, v view) {
		for _, p := range m.procs.all() {
			p.mu.Lock()
			p.noReload = true
			p.mu.Unlock()
		}
		m.request("reload", func() <-chan Result { return m.s.Reload(history.TriggerCtl) })
	}},
	"reloading": {func(v view) string { return missing(v.being, "no live worker") },
		func(m *machine, v view) {
			m.notifyVars(v.being, map[string]string{"RELOADING": "1", "MONOTONIC_USEC": "1"})
		}},
	"reload-done": {func(v view) string { return missingRun(v.reload) }, func(m *machine, v view) {
		m.notifyVars(v.current, map[string]string{"RELOADING": "1", "MONOTONIC_USEC": "1"})
		m.notifyVars(v.current, map[string]string{"READY": "1", "VERSION": "v2"})
	}},
	"reload-failed": {func(v view) string { return missing(v.being, "no live worker") },
		func(m *machine, v view) {
			m.notifyVars(v.being, map[string]string{"RELOAD": "failed", "RELOAD_ERROR": "fake: syntax error"})
		}},
	"reload-timeout": {func(v view) string { return missingRun(v.reload) },
		func(m *machine, v view) { m.send(reloadTimeoutEvent{run: v.reload}) }},
	"rollback": {always, func(m *machine, v view) {
		m.request("up", func() <-chan Result { return m.s.Rollback(0) })
	}},
	"save-failed": {func(v view) string { return missing(v.saver, "no live worker") },
		func(m *machine, v view) { m.notify(v.saver, "HANDOVER", "failed") }},
	"probation-end": {always, func(m *machine, v view) { // a stale timer where no generation is on probation
		ev := probationEndEvent{}
		if v.current != nil {
			ev.gen = v.current.gen
		}
		m.send(ev)
	}},
	"ready": {func(v view) string { return missing(v.being, "no live worker") },
		func(m *machine, v view) { m.notify(v.being, "READY", "1") }},
	"next-exit": {func(v view) string { return missing(v.next, "no next generation") },
		func(m *machine, v view) { m.exit(v.next) }},
	"ready-timeout": {func(v view) string { return missing(v.being, "no live worker") },
		func(m *machine, v view) { m.send(readyTimeoutEvent{w: v.being}) }}, // token 0: the timer armed at start
	"go-timeout": {func(v view) string { return missing(v.goSent, "no worker was sent GO") },
		func(m *machine, v view) { m.send(readyTimeoutEvent{w: v.goSent, token: v.goToken}) }},
	"pass-failed": {func(v view) string { return missing(v.goSent, "no worker was sent GO") },
		func(m *machine, v view) { m.send(passFailedEvent{w: v.goSent, err: errors.New("fake: broken pipe")}) }},
	"waiting": {func(v view) string { return missing(v.waiter, "no worker has a handover connection") },
		func(m *machine, v view) { m.send(waitingEvent{w: v.waiter}) }},
	"saved": {func(v view) string { return missing(v.saver, "no live worker") },
		func(m *machine, v view) { m.notify(v.saver, "HANDOVER", "saved") }},
	"old-exit": {func(v view) string { return missing(v.draining, "no generation is draining") },
		func(m *machine, v view) { m.exit(v.draining) }},
	"crash": {func(v view) string { return missing(v.current, "no current generation serving or starting") },
		func(m *machine, v view) { m.exit(v.current) }},
	"successor-waiting": {func(v view) string {
		if !v.canAsk {
			return "no successor in handover mode waits to ask for the handover"
		}
		return ""
	}, func(m *machine, v view) {
		m.succ.askHandOver(m.t)
		m.waitFor("the handover request", func() bool { return m.last.selfAsked })
		m.settle()
	}},
	"successor-ok":     {successorNeeds, func(m *machine, v view) { m.answerSuccessor(nil) }},
	"successor-failed": {successorNeeds, func(m *machine, v view) { m.answerSuccessor(errNoSuccessor) }},
}

// reinstall puts a new file at the worker's path by rename, as a
// deployment does, so that each upgrade runs a build of its own (the same
// file started again would share its held entry, and get no probation).
func (m *machine) reinstall() {
	tmp := m.path + ".new"
	if err := os.WriteFile(tmp, []byte("#!/bin/sh\n"), 0o755); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Rename(tmp, m.path); err != nil {
		m.t.Fatal(err)
	}
}

// request asks for an upgrade or a self-upgrade; the reply is the setup's
// (named) or the event's (req).
func (m *machine) request(name string, ask func() <-chan Result) {
	if m.inEvent {
		name = "req"
	}
	m.replies[name] = ask()
	m.settle()
}

func (m *machine) send(ev any) {
	m.t.Helper()
	if !m.s.send(ev) {
		m.t.Fatalf("%T: the loop is gone", ev)
	}
	m.settle()
}

// notifyVars is a message of several lines from w.
func (m *machine) notifyVars(w *worker, vars map[string]string) {
	m.send(notifyEvent{gen: w.gen, msg: notify.Message{PID: w.pid(), Vars: vars}})
}

func missingRun(r *reloadRun) string {
	if r == nil {
		return "no reload running"
	}
	return ""
}

// notify is a message from w, as the kernel would vouch for it.
func (m *machine) notify(w *worker, key, value string) {
	if p := w.proc.(*fakeProcess); key == "HANDOVER" && value == "failed" {
		p.mu.Lock()
		p.failedSaves++
		p.mu.Unlock()
	}
	m.send(notifyEvent{gen: w.gen, msg: notify.Message{PID: w.pid(), Vars: map[string]string{key: value}}})
}

// exit makes w's process exit with status 1.
func (m *machine) exit(w *worker) {
	w.proc.(*fakeProcess).exit(exitStatus(1))
	m.settle()
}

// answerSuccessor answers the running Start; with none running, the answer
// comes late, straight to the loop.
func (m *machine) answerSuccessor(err error) {
	m.t.Helper()
	if _, inFlight := m.procs.held(); inFlight == 0 {
		m.send(successorEvent{err: err})
		return
	}
	var answer chan error
	select {
	case answer = <-m.succ.starts:
	case <-time.After(waitBound):
		m.t.Fatalf("no successor Start within %v", waitBound)
	}
	m.mu.Lock()
	n := m.answers
	m.mu.Unlock()
	answer <- err
	select { // the hold on orphans ends before the answer is sent
	case <-m.procs.released:
	case <-time.After(waitBound):
		m.t.Fatalf("the hold on orphans not released within %v", waitBound)
	}
	m.waitFor("the successor's answer", func() bool { return m.answers > n })
	m.settle()
}

func always(view) string { return "" }

func missing(w *worker, why string) string {
	if w == nil {
		return why
	}
	return ""
}

// successorNeeds: an answer is either the running Start's, or a late one,
// injected, in a state that must ignore it; but a real Start cannot answer
// while the HandOver it called waits for the worker to save.
func successorNeeds(v view) string {
	if v.selfSaving {
		return "Start does not return while its HandOver waits for the worker to save"
	}
	return ""
}

// view is what the test needs of the loop's fields to build events, taken on
// the loop after each event.
type view struct {
	state            state
	lastGen          int
	being            *worker // of the generation being started; else the newest live one
	next             *worker
	current          *worker // of a current generation that is not draining
	draining         *worker // of a draining generation
	saver            *worker // the worker that saves, or would
	waiter           *worker // the last next worker with a handover connection, live or not
	goSent           *worker // the last worker sent GO, live or not
	goToken          int
	successorRunning bool
	canAsk           bool // the running successor may ask for the handover
	selfAsked        bool // a self-upgrade's successor asked for the handover
	selfSaving       bool // a self-upgrade's worker was asked to save and has not
	reload           *reloadRun
}

// look reads the loop's fields; it runs on the loop.
func (m *machine) look(prev view) view {
	s := m.s
	v := view{state: s.state, lastGen: s.lastGen, next: liveWorker(s.next), waiter: prev.waiter,
		goSent: prev.goSent, goToken: prev.goToken}
	_, inFlight := m.procs.held()
	v.successorRunning = inFlight > 0
	v.canAsk = s.self != nil && s.cfg.Handover && !s.self.asked && inFlight > 0
	v.selfAsked = s.self != nil && s.self.asked
	v.selfSaving = v.selfAsked && !s.self.saved
	v.reload = s.reload
	if v.next != nil && v.next.handover != nil {
		v.waiter = v.next
	}
	if h := s.handover; h != nil && h.goSent {
		v.goSent, v.goToken = h.next, h.next.readyToken
	}
	if g := s.current; g != nil && g.phase != draining {
		v.current = liveWorker(g)
	}
	v.being = v.next
	if g := s.current; v.being == nil && g != nil && g.phase == starting {
		v.being = liveWorker(g)
	}
	switch {
	case s.handover != nil:
		v.saver = liveWorker(s.handover.old)
	case s.self != nil:
		v.saver = liveWorker(s.self.old)
	}
	for i, g := range s.gens {
		if w := liveWorker(g); w != nil && g.phase == draining && v.draining == nil {
			v.draining = w
		}
		if w := liveWorker(g); w != nil && v.saver == nil {
			v.saver = w // the oldest
		}
		if w := liveWorker(s.gens[len(s.gens)-1-i]); w != nil && v.being == nil {
			v.being = w // the newest
		}
	}
	return v
}

func liveWorker(g *generation) *worker {
	if g == nil {
		return nil
	}
	for _, sl := range g.slots {
		if sl.worker != nil {
			return sl.worker
		}
	}
	return nil
}

func (m *machine) view() view {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

// steps applies events that can be built.
func (m *machine) steps(events ...string) {
	for _, name := range events {
		ev, v := machineEvents[name], m.view()
		if why := ev.needs(v); why != "" {
			m.t.Fatalf("%s: %s", name, why)
		}
		ev.apply(m, v)
	}
}

// run drives the supervisor into the setup's state, applies the event and
// checks the outcome.
func (m *machine) run(su machineSetup, event, want string) {
	t := m.t
	m.steps(su.steps...)
	before := m.status()
	if before.State != su.state {
		t.Fatalf("setup %v ends in %s, want %s", su.steps, before.State, su.state)
	}
	for name, ch := range m.replies { // the setup's business
		select {
		case <-ch:
			delete(m.replies, name)
		default:
		}
	}
	ev, v := machineEvents[event], m.view()
	switch why := ev.needs(v); {
	case want == "n/a" && why == "":
		t.Fatal("the table says n/a, but the event can be built: give it an outcome")
	case want == "n/a":
		t.Skip(why)
	case why != "":
		t.Fatalf("the table says %q, but the event cannot be built: %s", want, why)
	}
	holds, _ := m.procs.held()
	m.inEvent = true
	ev.apply(m, v)
	m.expect(want, before, holds)
}

// expect checks the outcome of the event (see machineTable).
func (m *machine) expect(want string, before Status, holds int) {
	t := m.t
	t.Helper()
	fields := strings.Fields(want)
	if fields[0] == "done" {
		if err := m.wait(); err != nil {
			t.Errorf("Run: %v", err)
		}
		if m.s.Retired() != (before.State == "retired") {
			t.Errorf("Retired() = %v after %s", m.s.Retired(), before.State)
		}
		return
	}
	st, ok := m.sync()
	if !ok {
		t.Fatalf("Run returned; want %q", want)
	}
	answers := map[string]string{}
	successor := false
	for _, f := range fields[1:] {
		k, v, _ := strings.Cut(f, "=")
		switch {
		case f == "+successor":
			successor = true
		case k == "cur" && (st.Current == nil || strconv.Itoa(st.Current.Gen) != v):
			t.Errorf("current generation %s, want %s", shape(st), v)
		case k != "cur":
			answers[k] = v
		}
	}
	switch fields[0] {
	case "-":
		if shape(st) != shape(before) {
			t.Errorf("%s, want as before: %s", shape(st), shape(before))
		}
	case "=":
		if st.State != before.State {
			t.Errorf("state %s, want %s as before", st.State, before.State)
		}
	default:
		if st.State != fields[0] {
			t.Errorf("state %s, want %s", st.State, fields[0])
		}
	}
	for name, ch := range m.replies {
		got, want := "waiting", answers[name]
		select {
		case r := <-ch:
			got = resultWord(r)
		default:
		}
		if want == "" {
			want = "waiting"
		}
		if got != want {
			t.Errorf("%s: %s, want %s", name, got, want)
		}
		delete(answers, name)
	}
	for name := range answers {
		t.Errorf("no request %s to answer", name)
	}
	if now, _ := m.procs.held(); (now > holds) != successor {
		t.Errorf("successors started: %d, want +successor %v", now-holds, successor)
	}
}

// shape is what "-" keeps: the state, the last generation number, the
// current and next generations and whether each of their workers is ready.
func shape(st Status) string {
	gen := func(g *GenStatus) string {
		if g == nil {
			return "none"
		}
		ready := make([]bool, len(g.Workers))
		for i, w := range g.Workers {
			ready[i] = w.Ready
		}
		return fmt.Sprintf("%d (ready: %v)", g.Gen, ready)
	}
	return fmt.Sprintf("%s, last gen %d, current %s, next %s", st.State, st.LastGen, gen(st.Current), gen(st.Upgrading))
}

// resultWord is a Result as the table writes it: ok, or the kind, with +rb
// when rolled back.
func resultWord(r Result) string {
	var ue *UpgradeError
	switch {
	case r.Err == nil:
		return "ok"
	case !errors.As(r.Err, &ue):
		return "error " + r.Err.Error()
	case ue.RolledBack:
		return string(ue.Kind) + "+rb"
	}
	return string(ue.Kind)
}
