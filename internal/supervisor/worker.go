package supervisor

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/procswitch/supervisor/internal/contract"
	"github.com/procswitch/supervisor/internal/history"
	"github.com/procswitch/supervisor/internal/notify"
	"github.com/procswitch/supervisor/internal/proc"
	"github.com/procswitch/supervisor/internal/ready"
)

// onExit handles a worker process that has exited and been reaped.
func (s *Supervisor) onExit(w *worker) {
	g, sl := w.gen, w.slot
	w.cancel()
	w.readyTimer.Stop()
	// What the worker started dies with it, as systemd's KillMode=control-group:
	// a child left behind would keep the listening socket open.
	w.proc.KillGroup()
	if sl.standby == w {
		s.onStandbyExit(w, proc.Describe(w.proc.Status()))
		return
	}
	if sl.worker == w {
		sl.worker = nil
	}
	status := proc.Describe(w.proc.Status())
	if ws := w.proc.Status(); ws.Exited() && ws.ExitStatus() == proc.ExitCodeFromShim {
		status += " (127 is also what the exec shim exits with when it cannot execute the worker: its stderr says why)"
	}
	s.log.Info().Int("gen", g.n).Int("pid", w.pid()).Str("status", status).
		Str("phase", g.phase.String()).Msg("worker exited")
	early := fmt.Sprintf("worker %d exited before it was ready: %s", w.pid(), status)
	if w.status != "" {
		early += " (its last STATUS=: " + w.status + ")" // a worker's own word on why
	}
	s.onReloadExit(w, status)
	switch {
	case g == s.next:
		s.onNextFailed(g, s.failKind(KindExited), early)
	case g == s.current && g.ahead:
		s.failAhead(g, early)
	case g.phase == draining || g.phase == failed:
		s.onHandingWorkerExit(w)
		s.reapGeneration(g)
	case g == s.current && g.bad && s.next != nil:
		// Rolled back from, in overlap mode: its other workers serve until
		// the previous binary is ready, and are not restarted.
		s.log.Warn().Int("gen", g.n).Int("pid", w.pid()).Msg("worker of a generation rolled back from exited: not restarted")
	case g == s.current && s.state == stateProbation && s.probation.gen == g:
		why := fmt.Sprintf("worker %d exited: %s", w.pid(), status)
		if w.hung {
			why = fmt.Sprintf("worker %d hung (no WATCHDOG=1 for %v) and was killed", w.pid(), s.cfg.Watchdog)
		}
		s.onProbationFailure(g, why)
	case g == s.current:
		if s.startFailed(g, w, status) {
			return
		}
		// A waiting standby takes the first crash of a series at once; a
		// crash soon after backs off as any restart does.
		if delay := s.crashDelay(sl, w); sl.crashes > 1 || !s.promoteStandby(g, sl, w, status) {
			s.restartAfter(g, sl, delay)
		}
		s.record(history.Record{Event: history.EventCrash, Trigger: history.TriggerCrash, Gen: g.n,
			Binary: g.binary, Version: g.version, Result: history.ResultOK, Reason: fmt.Sprintf("worker %d: %s", w.pid(), status)})
	default:
		s.reapGeneration(g)
	}
}

// scheduleRestart restarts a crashed worker of the current generation,
// after crashDelay.
func (s *Supervisor) scheduleRestart(g *generation, sl *slot, w *worker) {
	s.restartAfter(g, sl, s.crashDelay(sl, w))
}

// crashDelay counts a crash of the slot's worker w (nil: a restart that
// failed) and says how long to wait before the next start. A worker that
// was ready and served for RestartMax counts as healthy: its crash starts
// the count again, and the next start is at once, since its players (whose
// connections the live fd store may hold) wait for nothing else; a
// standby, if one waits, takes the first crash of a series (standby.go).
// Each crash after that waits RestartMin, doubling with each consecutive
// crash up to RestartMax: a crash loop backs off, standby or not.
func (s *Supervisor) crashDelay(sl *slot, w *worker) time.Duration {
	healthy := w != nil && w.ready && time.Since(w.readyAt) >= s.cfg.RestartMax
	if healthy {
		sl.crashes, sl.freeRestart = 0, true
	} else if sl.crashes == 0 {
		sl.freeRestart = false
	}
	sl.crashes++
	if healthy {
		return 0
	}
	if sl.freeRestart {
		return s.cfg.backoff(sl.crashes - 1) // the series began with a restart at once
	}
	return s.cfg.backoff(sl.crashes)
}

func (s *Supervisor) restartAfter(g *generation, sl *slot, delay time.Duration) {
	s.log.Warn().Int("gen", g.n).Int("slot", sl.index).Int("crashes", sl.crashes).
		Float64("delay_ms", ms(delay)).Msg("worker restarting")
	sl.restart = time.AfterFunc(delay, func() { s.send(restartEvent{gen: g, slot: sl}) })
	s.observe(WorkersChanged)
}

func (s *Supervisor) onRestart(g *generation, sl *slot) {
	sl.restart = nil
	if g != s.current || sl.worker != nil {
		return
	}
	sl.restarts++
	if err := s.startWorker(g, sl); err != nil {
		s.log.Error().Err(err).Int("gen", g.n).Int("slot", sl.index).Msg("worker restart failed")
		s.scheduleRestart(g, sl, nil)
		return
	}
	s.observe(WorkersChanged)
}

// markReady records that w is ready, by READY=1 or by the probe.
func (s *Supervisor) markReady(w *worker) {
	if w.ready || w.slot.worker != w {
		return
	}
	if w.handover != nil && !w.goSent {
		s.log.Warn().Int("gen", w.gen.n).Int("pid", w.pid()).Msg("READY=1 before GO ignored: a new worker in handover mode is ready once it has restored")
		return
	}
	w.ready, w.readyAt, w.lastPing = true, time.Now(), time.Now()
	w.readyTimer.Stop()
	g := w.gen
	s.log.Debug().Int("gen", g.n).Int("pid", w.pid()).
		Float64("ready_ms", ms(w.readyAt.Sub(w.proc.StartTime()))).Msg("worker ready")
	if s.cfg.Watchdog > 0 {
		time.AfterFunc(s.cfg.Watchdog, func() { s.send(watchdogEvent{w: w}) })
	}
	if g.phase == starting && g.allReady() {
		s.onGenerationReady(g)
	}
}

func (s *Supervisor) onReadyTimeout(w *worker, token int) {
	g := w.gen
	if w.ready || w.slot.worker != w || g.phase == draining || g.phase == failed || token != w.readyToken {
		return
	}
	reason := fmt.Sprintf("worker %d not ready within %v (ready probe: %v)", w.pid(), s.cfg.ReadyTimeout, s.cfg.Ready)
	if g == s.next {
		s.onNextFailed(g, s.failKind(KindNotReady), reason)
		return
	}
	s.log.Warn().Int("gen", g.n).Int("pid", w.pid()).Str("reason", reason).Msg("worker not ready: killing it")
	w.proc.Kill() // its exit restarts it, with back-off
}

// onWatchdog checks that a ready worker pinged within the watchdog interval.
func (s *Supervisor) onWatchdog(w *worker) {
	g := w.gen
	if w.slot.worker != w || g.phase == draining || g.phase == failed {
		return
	}
	silent := time.Since(w.lastPing)
	if silent < s.cfg.Watchdog {
		time.AfterFunc(s.cfg.Watchdog-silent, func() { s.send(watchdogEvent{w: w}) })
		return
	}
	s.log.Error().Int("gen", g.n).Int("pid", w.pid()).Float64("silent_ms", ms(silent)).
		Msg("worker hung")
	w.hung = true
	w.proc.Kill()
}

// onOwnMarker handles the supervisor's own datagram saying a worker exited.
func (s *Supervisor) onOwnMarker(g *generation, msg notify.Message) {
	msg.CloseFDs()
	if msg.Vars[reexecKey] != "" {
		go s.readNotify(g) // a re-exec's marker, after it gave up waiting: the reader stopped at it
		return
	}
	pid, err := strconv.Atoi(msg.Vars[exitedKey])
	if err != nil {
		return
	}
	if w := g.workerByPID(pid); w != nil {
		s.onExit(w)
	}
}

// onNotify applies a worker's sd_notify message. Messages from any process
// that is not one of g's workers are dropped: the kernel vouches for the PID.
func (s *Supervisor) onNotify(g *generation, msg notify.Message) {
	if msg.PID == os.Getpid() {
		s.onOwnMarker(g, msg)
		return
	}
	w := g.workerByPID(msg.PID)
	if w == nil {
		msg.CloseFDs()
		s.log.Warn().Int("gen", g.n).Int("pid", msg.PID).Int("uid", msg.UID).
			Msg("notify message from a process that is not a worker: ignored")
		return
	}
	switch {
	case msg.Has("FDSTORE", "1") && len(msg.FDs) > 0:
		s.onFDStore(w, msg)
	case msg.Has("FDSTOREREMOVE", "1"):
		msg.CloseFDs()
		s.onFDStoreRemove(w, msg.Vars["FDNAME"])
	default:
		msg.CloseFDs()
	}
	if msg.Has(contract.KeyHandover, contract.HandoverSaved) {
		s.onWorkerSaved(w)
	}
	if msg.Has(contract.KeyHandover, contract.HandoverFailed) {
		s.onSaveFailed(w, msg.Vars[contract.KeyHandoverError])
	}
	if st, ok := msg.Vars["STATUS"]; ok {
		w.status = st
		s.log.Debug().Int("gen", g.n).Int("pid", w.pid()).Str("status", st).Msg("worker status")
	}
	if msg.Has("STOPPING", "1") {
		s.log.Debug().Int("gen", g.n).Int("pid", w.pid()).Msg("worker stopping")
	}
	if msg.Has("WATCHDOG", "1") {
		w.lastPing = time.Now()
	}
	if msg.Has("WATCHDOG", "trigger") {
		w.lastPing = time.Time{}
		s.onWatchdog(w)
		return
	}
	if s.onReloadNotify(w, msg) {
		return // a reload's answer, not a start's READY=1
	}
	if msg.Has("READY", "1") {
		if s.cfg.Ready.Mode == ready.Notify || s.cfg.Handover {
			s.markReady(w)
		} else {
			s.log.Debug().Int("pid", w.pid()).Str("probe", s.cfg.Ready.String()).Msg("READY=1 ignored: the probe decides")
		}
	}
}

// failKind is kind, unless the new worker was told to restore: then it
// failed to restore.
func (s *Supervisor) failKind(kind Kind) Kind {
	if s.state == stateRestoring {
		return KindRestoreFailed
	}
	return kind
}

// startFailed counts a failed start of the first generation (before it was
// ever ready) and, past Config.StartAttempts, gives up: Run returns the
// reason, as a failed start of a systemd service.
func (s *Supervisor) startFailed(g *generation, w *worker, status string) bool {
	if s.state != stateStarting || g.everReady || s.firstWasReady() {
		return false
	}
	s.startFailures++
	if s.startFailures < s.cfg.StartAttempts {
		return false
	}
	s.fatal = fmt.Errorf("the first generation did not become ready in %d attempts; the last worker (pid %d) %s: fix the worker, or raise --start-attempts",
		s.startFailures, w.pid(), status)
	s.log.Error().Int("gen", g.n).Int("attempts", s.startFailures).Str("reason", s.fatal.Error()).Msg("start failed: giving up")
	s.stopAll()
	return true
}

// firstWasReady reports whether any generation was ever ready.
func (s *Supervisor) firstWasReady() bool {
	select {
	case <-s.readyCh:
		return true
	default:
		return false
	}
}
