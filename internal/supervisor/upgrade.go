package supervisor

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/procswitch/supervisor/internal/proc"
	"golang.org/x/sys/unix"
)

func (s *Supervisor) onUpgradeRequest(reply chan Result) {
	switch {
	case s.stopping:
		reply <- Result{Err: ErrStopping}
	case s.succ != nil:
		reply <- Result{Err: errors.New("the supervisor is upgrading itself (SIGUSR2): upgrade the workers once that is done")}
	case s.upgrading != nil:
		s.requested = true
		s.pending = append(s.pending, reply)
		s.log.Info().Int("gen", s.upgrading.n).Msg("upgrade coalesced")
	default:
		s.startUpgrade([]chan Result{reply})
	}
}

// startUpgrade starts a new generation beside the current one. It becomes
// current once all its workers are ready; until then the old one serves.
func (s *Supervisor) startUpgrade(waiters []chan Result) {
	g, err := s.newGeneration()
	if err != nil {
		s.log.Error().Int("gen", s.lastGen+1).Str("binary", s.cfg.Path).Str("reason", err.Error()).
			Str("result", "failed").Msg("upgrade failed")
		reply(waiters, Result{Err: err})
		s.finishUpgrade(Result{Err: err})
		return
	}
	s.upgrading, s.waiters = g, waiters
	s.gens = append(s.gens, g)
	s.log.Info().Int("gen", g.n).Str("binary", g.binary).Msg("upgrade started")
	s.observe(UpgradeStarted)
	if err := CheckExecutable(g.binary); err != nil {
		s.failUpgrade(g, err.Error())
		return
	}
	for _, sl := range g.slots {
		if err := s.startWorker(g, sl); err != nil {
			s.failUpgrade(g, err.Error())
			return
		}
	}
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

// generationReady runs when the last of g's workers becomes ready.
func (s *Supervisor) generationReady(g *generation) {
	g.readyTime = time.Since(g.started)
	g.everReady = true
	g.phase = serving
	s.hashBinary(g) // now, not while it starts: it would compete with its start-up
	s.log.Info().Int("gen", g.n).Ints("pids", g.pids()).Str("binary", g.binary).
		Float64("ready_ms", ms(g.readyTime)).Msg("generation ready")
	if g != s.upgrading {
		s.clearStore() // a cold start (a rollback) got the stored connections
		s.firstReady()
		return
	}
	old := s.current
	s.current, s.upgrading = g, nil
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
	s.firstReady()
	if old != nil {
		s.drain(old) // in handover mode it already is draining
		s.reapGeneration(old)
		old.exe.close() // no rollback to it any more
	}
	s.finishUpgrade(Result{Gen: g.n})
}

// failUpgrade kills a generation that will not become ready; the current
// one never stopped serving.
func (s *Supervisor) failUpgrade(g *generation, reason string) {
	g.phase = failed
	s.upgrading = nil
	s.killGeneration(g)
	g.exe.close()
	if s.handover != nil && s.handover.next.gen == g {
		reason = s.handoverFailed(reason)
	}
	s.log.Error().Int("gen", g.n).Str("binary", g.binary).Str("reason", reason).
		Str("result", "failed").Msg("upgrade failed")
	s.reapGeneration(g)
	s.finishUpgrade(Result{Gen: g.n, Err: fmt.Errorf("upgrade to generation %d failed: %s", g.n, reason)})
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
// upgrade, if one was asked for.
func (s *Supervisor) finishUpgrade(r Result) {
	reply(s.waiters, r)
	s.waiters = nil
	readyMS := 0.0
	if r.Err == nil && s.current != nil {
		readyMS = ms(s.current.readyTime)
	}
	s.recordUpgrade(r, readyMS)
	s.observe(UpgradeFinished)
	if s.requested && !s.stopping {
		next := s.pending
		s.requested, s.pending = false, nil
		s.startUpgrade(next)
	}
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
	if g.alive() > 0 || g == s.current || g == s.upgrading || g.reaped {
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

// onStop drains everything, the generation being started included: it may
// already have accepted connections.
func (s *Supervisor) onStop() {
	if s.stopping {
		return
	}
	s.stopping = true
	s.log.Info().Msg("stopping: draining every generation")
	defer s.observe(Stopping)
	reply(s.pending, Result{Err: ErrStopping})
	s.pending, s.requested = nil, false
	if g := s.upgrading; g != nil {
		s.upgrading = nil
		s.log.Warn().Int("gen", g.n).Str("binary", g.binary).Str("reason", "stopping").
			Str("result", "cancelled").Msg("upgrade cancelled")
		reply(s.waiters, Result{Gen: g.n, Err: ErrStopping})
		s.waiters = nil
		s.drain(g)
	}
	if g := s.current; g != nil {
		s.current = nil
		s.drain(g)
	}
}
