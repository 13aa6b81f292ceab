package supervisor

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/procswitch/supervisor/internal/contract"
	"github.com/procswitch/supervisor/internal/history"
	"github.com/procswitch/supervisor/internal/notify"
	"golang.org/x/sys/unix"
)

// A reload in place (`supervisor ctl reload`) follows systemd's
// Type=notify-reload contract, with no process switch: the reload signal
// goes to every ready worker of the serving generation; each answers
// RELOADING=1, then READY=1 (with VERSION=, what it runs now) or
// RELOAD=failed with RELOAD_ERROR=. The reload is a state of the machine
// (machine.go): it ends when every worker has answered, exited, or the
// reload timeout passed. A worker whose reload failed serves on with what
// it ran before: that is the worker's business.
//
// A worker that does not catch the reload signal would be killed by it (or
// would ignore it): the supervisor reads its caught and ignored signals
// (/proc/PID/status) first, and refuses the reload without signalling
// anyone when one does not catch it. The Go runtime catches every signal,
// so a Go worker passes this check whatever it does with the signal: one
// made with package handoff answers; another must handle or ignore it
// (signal.Notify, signal.Ignore), or the reload kills it.

type (
	reloadRequest struct {
		reply   chan Result
		trigger string // history.Trigger*
	}
	reloadTimeoutEvent struct{ run *reloadRun }
)

// reloadRun is the running reload.
type reloadRun struct {
	gen      *generation
	trigger  string
	began    time.Time
	replies  []chan Result
	pending  []*worker // signalled, not answered yet
	failures []string  // one per worker that failed, in words
	kind     Kind      // the worst failure so far: reload-failed over reload-timeout
	timer    *time.Timer
	started  bool // the workers were signalled (ReloadStarted was observed)
}

// disposition is what a process does with a signal.
type disposition struct{ caught, ignored bool }

// onReloadRequest: ctl reload. Refused in every state but serving and
// probation (which it ends): nothing else has one generation of ready
// workers to reload, and a second reload would not know which of the
// running one's answers are its own.
func (s *Supervisor) onReloadRequest(reply chan Result, trigger string) {
	var err *UpgradeError
	switch s.state {
	case stateServing, stateProbation:
		if err = s.checkReloadable(s.current); err == nil {
			s.endProbation("a reload was asked for")
			s.startReload(reply, trigger)
			return
		}
		err.Gen, err.Reload = s.current.n, true
		s.finishReload(&reloadRun{gen: s.current, trigger: trigger, began: time.Now(), replies: []chan Result{reply}}, err)
		return
	case stateStarting:
		err = refused("the first generation is not ready yet: reload once it serves (a worker that starts loads the current code anyway)")
	case stateReloading:
		err = refused("a reload is running: wait for its result (ctl reload --wait, ctl status), then ask again")
	case stateUpgrading, stateSaving, stateRestoring, stateRollingBack:
		err = refused("an upgrade or a rollback is running: reload once it has finished (its new workers load the current code anyway)")
	case stateSelfUpgrading:
		err = refused("the supervisor is upgrading itself (SIGUSR2): reload once that is done")
	case stateRetired:
		err = refused("this supervisor has handed over to its successor: ask the new supervisor")
	case stateStopping:
		err = stoppingError(0, KindRefused)
	}
	err.Reload = true
	s.log.Warn().Str("state", s.state.String()).Str("kind", string(err.Kind)).Str("reason", err.Reason).
		Msg("reload refused")
	reply <- Result{Err: err}
}

// checkReloadable says why g's workers cannot be reloaded, before any of
// them is signalled: none is ready, or one does not catch the signal.
func (s *Supervisor) checkReloadable(g *generation) *UpgradeError {
	sig := unix.SignalName(s.cfg.ReloadSignal)
	ready := 0
	for _, sl := range g.slots {
		w := sl.worker
		if w == nil || !w.ready {
			continue
		}
		ready++
		d, err := s.procs.Disposition(w.pid(), s.cfg.ReloadSignal)
		switch {
		case err != nil:
			return refused(fmt.Sprintf("worker %d: cannot tell whether it handles %s: %v", w.pid(), sig, err))
		case d.ignored:
			return refused(fmt.Sprintf("worker %d ignores %s: it does not speak the reload contract (see the worker contract); nothing was signalled", w.pid(), sig))
		case !d.caught:
			return refused(fmt.Sprintf("worker %d does not handle %s: it does not speak the reload contract (see the worker contract); nothing was signalled", w.pid(), sig))
		}
	}
	if ready == 0 {
		return refused(fmt.Sprintf("no worker of generation %d is ready (restarting after a crash?): a worker that starts loads the current code anyway", g.n))
	}
	return nil
}

// startReload signals every ready worker of the current generation.
func (s *Supervisor) startReload(reply chan Result, trigger string) {
	g := s.current
	r := &reloadRun{gen: g, trigger: trigger, began: time.Now(), replies: []chan Result{reply}}
	s.reload = r
	r.started = true
	s.setState(stateReloading)
	for _, sl := range g.slots {
		if w := sl.worker; w != nil && w.ready {
			w.reloading, w.reloadAck = true, false
			r.pending = append(r.pending, w)
		}
	}
	s.log.Info().Int("gen", g.n).Ints("pids", g.pids()).Str("signal", unix.SignalName(s.cfg.ReloadSignal)).
		Str("trigger", trigger).Msg("reload started")
	s.observe(ReloadStarted)
	r.timer = time.AfterFunc(s.cfg.ReloadTimeout, func() { s.send(reloadTimeoutEvent{run: r}) })
	for _, w := range slices.Clone(r.pending) {
		if err := w.proc.Signal(s.cfg.ReloadSignal); err != nil {
			s.workerReloadFailed(w, KindReloadFailed, fmt.Sprintf("worker %d: the reload signal failed: %v", w.pid(), err))
		}
	}
}

// onReloadNotify applies what a worker says about the running reload; it
// reports whether msg was a reload answer (its READY=1 is then not a
// start's).
func (s *Supervisor) onReloadNotify(w *worker, msg notify.Message) bool {
	if v, ok := msg.Vars[contract.KeyVersion]; ok {
		w.version = oneLine(v, contract.MaxVersion)
	}
	if s.reload == nil || !w.reloading {
		return false
	}
	if msg.Has(contract.KeyReloading, "1") {
		w.reloadAck = true
		s.log.Debug().Int("gen", w.gen.n).Int("pid", w.pid()).Str("monotonic_usec", msg.Vars[contract.KeyMonotonicUSec]).
			Msg("worker reloading")
	}
	switch {
	case msg.Has(contract.KeyReload, contract.ReloadFailed):
		why := oneLine(msg.Vars[contract.KeyReloadError], contract.MaxReloadError)
		if why == "" {
			why = "it gave no reason"
		}
		s.workerReloadFailed(w, KindReloadFailed, fmt.Sprintf("worker %d could not reload: %s (it serves on with what it ran before)", w.pid(), why))
	case msg.Has("READY", "1") && w.reloadAck:
		s.log.Info().Int("gen", w.gen.n).Int("pid", w.pid()).Str("version", w.version).Msg("worker reloaded")
		s.workerAnswered(w)
	case msg.Has("READY", "1"):
		s.log.Warn().Int("gen", w.gen.n).Int("pid", w.pid()).
			Msg("READY=1 during a reload, before RELOADING=1: ignored (the contract is RELOADING=1, then READY=1)")
	default:
		return false
	}
	return true
}

// onReloadExit: a worker exited during the reload; it is restarted as any
// crash.
func (s *Supervisor) onReloadExit(w *worker, status string) {
	if s.reload != nil && w.reloading {
		s.workerReloadFailed(w, KindReloadFailed, fmt.Sprintf("worker %d exited during the reload: %s", w.pid(), status))
	}
}

func (s *Supervisor) onReloadTimeout(r *reloadRun) {
	if s.reload != r {
		return
	}
	for _, w := range slices.Clone(r.pending) {
		what := "no RELOADING=1"
		if w.reloadAck {
			what = "RELOADING=1, but neither READY=1 nor RELOAD=failed"
		}
		s.workerReloadFailed(w, KindReloadTimeout, fmt.Sprintf("worker %d did not answer the reload within %v (%s): is it stuck reloading? It serves on; raise --reload-timeout if its reloads take longer",
			w.pid(), s.cfg.ReloadTimeout, what))
	}
}

func (s *Supervisor) workerReloadFailed(w *worker, kind Kind, reason string) {
	r := s.reload
	r.failures = append(r.failures, reason)
	if r.kind != KindReloadFailed {
		r.kind = kind
	}
	s.log.Error().Int("gen", w.gen.n).Int("pid", w.pid()).Str("kind", string(kind)).Str("reason", reason).
		Msg("worker reload failed")
	s.workerAnswered(w)
}

// workerAnswered takes w off the reload's list, and ends the reload once
// every worker has answered.
func (s *Supervisor) workerAnswered(w *worker) {
	r := s.reload
	w.reloading = false
	r.pending = slices.DeleteFunc(r.pending, func(x *worker) bool { return x == w })
	if len(r.pending) > 0 {
		return
	}
	var fail *UpgradeError
	if len(r.failures) > 0 {
		fail = &UpgradeError{Gen: r.gen.n, Kind: r.kind, Reload: true, Reason: strings.Join(r.failures, "; ")}
	}
	s.reload = nil
	r.timer.Stop()
	s.setState(stateServing)
	s.finishReload(r, fail)
	s.startQueued()
}

// cancelReload answers the running reload: a stop cut it short.
func (s *Supervisor) cancelReload() {
	r := s.reload
	if r == nil {
		return
	}
	s.reload = nil
	r.timer.Stop()
	for _, w := range r.pending {
		w.reloading = false
	}
	err := stoppingError(r.gen.n, KindCancelled)
	err.Reload = true
	s.finishReload(r, err)
}

// finishReload answers the reload's requests, keeps its result for the
// status, and records it.
func (s *Supervisor) finishReload(r *reloadRun, fail *UpgradeError) {
	version := r.gen.versions()
	took := time.Since(r.began)
	res := Result{Gen: r.gen.n, Version: version}
	u := &UpgradeStatus{Gen: r.gen.n, OK: fail == nil, At: time.Now(), ReadyMS: ms(took), Version: version}
	rec := history.Record{Event: history.EventReload, Trigger: r.trigger, Gen: r.gen.n, Binary: r.gen.binary,
		Result: history.ResultOK, WorkerVersion: version, ReadyMS: ms(took)}
	ev := s.log.Info()
	if fail != nil {
		res.Err = fail
		u.Kind, u.Reason = string(fail.Kind), fail.Error()
		rec.Result, rec.Kind, rec.Reason = history.ResultFailed, u.Kind, u.Reason
		ev = s.log.Error().Str("kind", u.Kind).Str("reason", u.Reason)
	}
	ev.Int("gen", r.gen.n).Str("version", version).Float64("reload_ms", ms(took)).Str("result", rec.Result).
		Msg("reload finished")
	reply(r.replies, res)
	s.lastReload = u
	s.recordFor(r.gen, rec)
	if r.started {
		s.observe(ReloadFinished)
	}
}

// versions is what g's workers report with VERSION=, distinct values
// comma-separated, in slot order.
func (g *generation) versions() string {
	var vs []string
	for _, sl := range g.slots {
		if w := sl.worker; w != nil && w.version != "" && !slices.Contains(vs, w.version) {
			vs = append(vs, w.version)
		}
	}
	return strings.Join(vs, ",")
}

// oneLine keeps what a worker said to its first line, at most n bytes.
func oneLine(s string, n int) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > n {
		s = s[:n]
	}
	return s
}

// readDisposition reads process pid's caught and ignored signals from
// /proc/PID/status (SigCgt, SigIgn: hexadecimal masks, bit n-1 for signal n).
func readDisposition(pid int, sig syscall.Signal) (disposition, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return disposition{}, err
	}
	defer f.Close()
	var d disposition
	found := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "SigCgt" && k != "SigIgn") {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return disposition{}, fmt.Errorf("/proc/%d/status: %s: %w", pid, k, err)
		}
		set := mask&(1<<(uint(sig)-1)) != 0
		if k == "SigCgt" {
			d.caught = set
		} else {
			d.ignored = set
		}
		found++
	}
	if err := sc.Err(); err != nil {
		return disposition{}, err
	}
	if found != 2 {
		return disposition{}, errors.New("/proc/" + strconv.Itoa(pid) + "/status: no SigCgt or SigIgn")
	}
	return d, nil
}
