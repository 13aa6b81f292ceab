package supervisor

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/procswitch/supervisor/internal/history"
	"github.com/procswitch/supervisor/internal/proc"
	"golang.org/x/sys/unix"
)

// upgradeSource is where an upgrade's binary comes from: the configured
// path, or a held earlier binary (a rollback).
type upgradeSource struct {
	held    *held  // nil: the path
	trigger string // history.Trigger*
	why     string // a rollback's reason, for the log
}

// startUpgrade starts a new generation beside the current one. It becomes
// current once all its workers are ready; until then the old one serves.
func (s *Supervisor) startUpgrade(src upgradeSource, waiters []chan Result) {
	n := s.lastGen + 1
	if src.held == nil {
		if bad := s.badAtPath(s.cfg.Path); bad != "" {
			s.upgradeNotStarted(n, src, waiters, KindRefused, errors.New(bad))
			return
		}
	}
	var g *generation
	var err error
	if src.held != nil {
		g, err = s.newGenerationFrom(src.held.binary, src.held.exe)
	} else {
		g, err = s.newGeneration()
	}
	if err != nil {
		if xerr := CheckExecutable(s.cfg.Path); xerr != nil && src.held == nil {
			s.upgradeNotStarted(n, src, waiters, KindNotExecutable, xerr)
		} else {
			s.upgradeNotStarted(n, src, waiters, KindStartFailed, err)
		}
		return
	}
	g.trigger, g.rollback = src.trigger, src.held != nil
	if s.current != nil {
		g.from = s.current.n
	}
	s.next, s.waiters = g, waiters
	s.gens = append(s.gens, g)
	s.setState(stateUpgrading)
	ev := s.log.Info().Int("gen", g.n).Str("binary", g.binary).Str("trigger", src.trigger)
	if src.held != nil {
		ev.Int("to_gen", src.held.gen()).Str("version", src.held.version).Str("reason", src.why).
			Msg("rollback started: the held binary of an earlier generation")
	} else {
		ev.Msg("upgrade started")
	}
	s.observe(UpgradeStarted)
	if src.held == nil {
		if err := CheckExecutable(g.binary); err != nil {
			s.onNextFailed(g, KindNotExecutable, err.Error())
			return
		}
	}
	for _, sl := range g.slots {
		if err := s.startWorker(g, sl); err != nil {
			s.onNextFailed(g, KindStartFailed, err.Error())
			return
		}
	}
}

// upgradeNotStarted reports an upgrade that failed before its generation
// existed.
func (s *Supervisor) upgradeNotStarted(n int, src upgradeSource, waiters []chan Result, kind Kind, err error) {
	fail := &UpgradeError{Gen: n, Kind: kind, Reason: err.Error()}
	binary := s.cfg.Path
	if src.held != nil {
		binary = src.held.binary
	}
	s.log.Error().Int("gen", fail.Gen).Str("binary", binary).Str("kind", string(kind)).Str("reason", fail.Reason).
		Str("result", "failed").Msg("upgrade failed")
	s.waiters = waiters
	g := &generation{n: n, binary: binary, trigger: src.trigger, rollback: src.held != nil}
	if s.current != nil {
		g.from = s.current.n
	}
	s.finishUpgrade(g, Result{Gen: fail.Gen, Err: fail})
}

// CheckExecutable says in words why the worker at path cannot be run: the
// command line checks it at start, and every upgrade before it forks.
func CheckExecutable(path string) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("worker %s does not exist: build it first, or check the path", path)
	case err != nil:
		return fmt.Errorf("worker %s: %w", path, err)
	case fi.IsDir():
		return fmt.Errorf("worker %s is a directory, not a program", path)
	case unix.Access(path, unix.X_OK) != nil:
		return fmt.Errorf("worker %s is not executable (mode %v): chmod +x it", path, fi.Mode().Perm())
	}
	return nil
}

// promote makes the next generation, now ready, the current one, and
// drains the old one. An upgrade that lost player state (the old worker
// died or hung while saving) serves, but does not succeed: its result says
// what was lost.
func (s *Supervisor) promote(g *generation) {
	old := s.current
	s.current, s.next = g, nil
	sameFile := old != nil && old.exe != nil && g.exe != nil && old.exe.same(g.exe)
	s.hold(g)
	var fail *UpgradeError
	oldPIDs := []int(nil)
	if old != nil {
		oldPIDs = old.pids()
	}
	var kept []stored
	cutover := ""
	if h := s.handover; h != nil {
		g.blackout = time.Since(h.began)
		oldPIDs = h.oldPIDs // they have exited by now
		s.handover = nil
		kept, s.store = s.store, nil
		cutover = h.cutover
		if h.lost != "" {
			fail = &UpgradeError{Gen: g.n, Kind: KindStateLost, Reason: "generation " + itoa(g.n) + " serves, but " + h.lost}
		}
	}
	ev := s.log.Info()
	msg := "upgrade succeeded"
	if fail != nil {
		ev, msg = s.log.Error().Str("kind", string(fail.Kind)).Str("lost", fail.Reason), "upgrade finished, but players lost state"
	}
	ev = ev.Int("gen", g.n).Ints("pids", g.pids()).Str("binary", g.binary).
		Float64("ready_ms", ms(g.readyTime)).Str("result", historyResult(fail))
	if s.cfg.Handover {
		ev = ev.Float64("blackout_ms", ms(g.blackout)).Int("connections", len(kept))
	}
	if old != nil {
		ev = ev.Int("old_gen", old.n).Ints("old_pids", oldPIDs)
	}
	if g.rollback {
		msg = "rollback succeeded"
	}
	ev.Msg(msg)
	s.setState(stateServing)
	s.firstReady()
	if old != nil {
		s.drain(old) // in handover mode it already is draining
		s.reapGeneration(old)
	}
	s.startProbation(g, kept, cutover, sameFile)
	r := Result{Gen: g.n}
	if fail != nil {
		r.Err = fail
	}
	s.finishUpgrade(g, r)
}

func historyResult(fail *UpgradeError) string {
	switch {
	case fail == nil:
		return history.ResultOK
	case fail.Kind == KindStateLost:
		return history.ResultLost
	}
	return history.ResultFailed
}

// firstReady marks the first time a generation is ready: the service is up.
func (s *Supervisor) firstReady() {
	first := false
	s.readyOnce.Do(func() { close(s.readyCh); first = true })
	if first {
		s.observe(FirstReady)
		if g := s.current; g != nil {
			rec := history.Record{Event: history.EventStart, Trigger: history.TriggerStart, Gen: g.n,
				Binary: g.binary, Version: g.version, Result: history.ResultOK, ReadyMS: ms(g.readyTime)}
			if s.cfg.LastGen > 0 {
				rec.Trigger, rec.FromGen = history.TriggerSIGUSR2, s.cfg.LastGen // a successor's first generation
			}
			s.recordFor(g, rec)
		}
	}
}

// finishUpgrade answers the upgrade's waiters and starts the coalesced next
// upgrade, if one was asked for and the state allows it now.
func (s *Supervisor) finishUpgrade(g *generation, r Result) {
	reply(s.waiters, r)
	s.waiters = nil
	s.recordUpgrade(g, r)
	s.observe(UpgradeFinished)
	s.startQueued()
}

// startQueued starts the coalesced upgrade once nothing is in the way.
func (s *Supervisor) startQueued() {
	if len(s.queued) == 0 || !(s.state == stateServing || s.state == stateProbation ||
		s.state == stateStarting && len(s.store) == 0) {
		return
	}
	next := s.queued
	s.queued = nil
	s.endProbation("an upgrade was asked for")
	s.startUpgrade(upgradeSource{trigger: s.queuedTrigger}, next)
}

// answerQueued answers the coalesced upgrade's requests with err.
func (s *Supervisor) answerQueued(err error) {
	reply(s.queued, Result{Err: err})
	s.queued = nil
}

func reply(waiters []chan Result, r Result) {
	for _, w := range waiters {
		w <- r
	}
}

// drain tells every worker of g to finish and exit, and arms the timeout
// after which the rest are killed.
func (s *Supervisor) drain(g *generation) {
	if g.phase == draining {
		return
	}
	g.phase = draining
	g.drainStarted = time.Now()
	g.stopTimers()
	s.endStandbys(g)
	for _, sl := range g.slots {
		if w := sl.worker; w != nil {
			w.cancel()
			if err := w.proc.Signal(s.cfg.DrainSignal); err != nil && !errors.Is(err, proc.ErrProcessDone) {
				s.log.Warn().Err(err).Int("pid", w.pid()).Msg("drain signal failed: killing the worker")
				w.proc.Kill()
			}
		}
	}
	if g.alive() == 0 {
		s.reapGeneration(g)
		return
	}
	g.drainTok++
	tok := g.drainTok
	time.AfterFunc(s.cfg.DrainTimeout, func() { s.send(drainTimeoutEvent{gen: g, token: tok}) })
}

// undrain puts a generation told to drain back to serving: its worker could
// not save for a handover, and goes on serving (HANDOVER=failed).
func (s *Supervisor) undrain(g *generation) {
	g.phase = serving
	g.drainTok++ // the drain timeout no longer counts
	for _, sl := range g.slots {
		w := sl.worker
		if w == nil {
			continue
		}
		w.lastPing = time.Now()
		if s.cfg.Watchdog > 0 && w.ready {
			time.AfterFunc(s.cfg.Watchdog, func() { s.send(watchdogEvent{w: w}) })
		}
	}
	s.restartEmptySlots(g)
}

func (s *Supervisor) onDrainTimeout(g *generation, token int) {
	if g.phase != draining || g.alive() == 0 || token != g.drainTok {
		return
	}
	g.killed = g.alive()
	s.log.Warn().Int("gen", g.n).Ints("pids", g.pids()).Dur("drain_timeout", s.cfg.DrainTimeout).
		Msg("drain timeout: killing workers")
	s.killGeneration(g)
}

// killGeneration kills every live worker of g, and their process groups.
func (s *Supervisor) killGeneration(g *generation) {
	g.stopTimers()
	s.endStandbys(g)
	for _, sl := range g.slots {
		if w := sl.worker; w != nil {
			w.cancel()
			w.proc.Kill()
		}
	}
}

// reapGeneration forgets a draining or failed generation once its last
// worker has exited.
func (s *Supervisor) reapGeneration(g *generation) {
	if g.alive() > 0 || g == s.current || g == s.next || g.reaped {
		return
	}
	g.reaped = true
	if g.phase == draining {
		drain := ms(time.Since(g.drainStarted))
		s.log.Info().Int("gen", g.n).Float64("drain_ms", drain).Int("killed", g.killed).Msg("generation drained")
		rec := history.Record{Event: history.EventDrained, Gen: g.n, Binary: g.binary, Version: g.version,
			Result: history.ResultOK, DrainMS: drain}
		if g.killed > 0 {
			rec.Reason = itoa(g.killed) + " worker(s) killed at the drain timeout"
		}
		s.record(rec)
	}
	g.notify.Close()
	for i, x := range s.gens {
		if x == g {
			s.gens = append(s.gens[:i], s.gens[i+1:]...)
			break
		}
	}
}
