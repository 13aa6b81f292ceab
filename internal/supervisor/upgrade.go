package supervisor

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/procswitch/supervisor/internal/proc"
	"golang.org/x/sys/unix"
)

// startUpgrade starts a new generation beside the current one. It becomes
// current once all its workers are ready; until then the old one serves.
func (s *Supervisor) startUpgrade(waiters []chan Result) {
	n := s.lastGen + 1
	g, err := s.newGeneration()
	if err != nil {
		if xerr := CheckExecutable(s.cfg.Path); xerr != nil {
			s.upgradeNotStarted(n, waiters, KindNotExecutable, xerr)
		} else {
			s.upgradeNotStarted(n, waiters, KindStartFailed, err)
		}
		return
	}
	s.next, s.waiters = g, waiters
	s.gens = append(s.gens, g)
	s.setState(stateUpgrading)
	s.log.Info().Int("gen", g.n).Str("binary", g.binary).Msg("upgrade started")
	s.observe(UpgradeStarted)
	if err := CheckExecutable(g.binary); err != nil {
		s.onNextFailed(g, KindNotExecutable, err.Error())
		return
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
func (s *Supervisor) upgradeNotStarted(n int, waiters []chan Result, kind Kind, err error) {
	fail := &UpgradeError{Gen: n, Kind: kind, Reason: err.Error()}
	s.log.Error().Int("gen", fail.Gen).Str("binary", s.cfg.Path).Str("kind", string(kind)).Str("reason", fail.Reason).
		Str("result", "failed").Msg("upgrade failed")
	s.waiters = waiters
	s.finishUpgrade(Result{Gen: fail.Gen, Err: fail})
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
// drains the old one.
func (s *Supervisor) promote(g *generation) {
	old := s.current
	s.current, s.next = g, nil
	ev := s.log.Info().Int("gen", g.n).Ints("pids", g.pids()).Str("binary", g.binary).
		Float64("ready_ms", ms(g.readyTime)).Str("result", "ok")
	oldPIDs := []int(nil)
	if old != nil {
		oldPIDs = old.pids()
	}
	if h := s.handover; h != nil {
		ev = ev.Float64("blackout_ms", ms(time.Since(h.began))).Int("connections", len(s.store))
		oldPIDs = h.oldPIDs // they have exited by now
		s.handover = nil
	}
	s.clearStore()
	if old != nil {
		ev = ev.Int("old_gen", old.n).Ints("old_pids", oldPIDs)
	}
	ev.Msg("upgrade succeeded")
	s.setState(stateServing)
	s.firstReady()
	if old != nil {
		s.drain(old) // in handover mode it already is draining
		s.reapGeneration(old)
		old.exe.close() // no rollback to it any more
	}
	s.finishUpgrade(Result{Gen: g.n})
}

// firstReady marks the first time a generation is ready: the service is up.
func (s *Supervisor) firstReady() {
	first := false
	s.readyOnce.Do(func() { close(s.readyCh); first = true })
	if first {
		s.observe(FirstReady)
	}
}

// finishUpgrade answers the upgrade's waiters and starts the coalesced next
// upgrade, if one was asked for and the state allows it now.
func (s *Supervisor) finishUpgrade(r Result) {
	reply(s.waiters, r)
	s.waiters = nil
	readyMS := 0.0
	if r.Err == nil && s.current != nil {
		readyMS = ms(s.current.readyTime)
	}
	s.recordUpgrade(r, readyMS)
	s.observe(UpgradeFinished)
	s.startQueued()
}

// startQueued starts the coalesced upgrade once nothing is in the way.
func (s *Supervisor) startQueued() {
	if len(s.queued) == 0 || !(s.state == stateServing || s.state == stateStarting && len(s.store) == 0) {
		return
	}
	next := s.queued
	s.queued = nil
	s.startUpgrade(next)
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
	time.AfterFunc(s.cfg.DrainTimeout, func() { s.send(drainTimeoutEvent{gen: g}) })
}

func (s *Supervisor) onDrainTimeout(g *generation) {
	if g.phase != draining || g.alive() == 0 {
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
		s.log.Info().Int("gen", g.n).Float64("drain_ms", ms(time.Since(g.drainStarted))).
			Int("killed", g.killed).Msg("generation drained")
	}
	g.notify.Close()
	for i, x := range s.gens {
		if x == g {
			s.gens = append(s.gens[:i], s.gens[i+1:]...)
			break
		}
	}
}
