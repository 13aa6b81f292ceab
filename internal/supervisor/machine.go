package supervisor

import (
	"errors"
	"time"

	"github.com/procswitch/supervisor/internal/history"
)

// The supervisor's lifecycle is one state machine: the type state, the
// table below, and one handler per event that switches on the state.
// setState is the only place where the state changes. Generations have a
// phase of their own (generation.go); the state says what the supervisor
// as a whole is doing with them.
//
// Which fields hold what in each state (checkInvariants enforces it):
//
//	state          current                     next          handover   self
//	starting       the first (or a restarted)  nil           nil        nil
//	               generation, not ready yet
//	serving        ready                       nil           nil        nil
//	probation      ready, on trial (probation.go) nil        nil        nil
//	reloading      ready, its workers reloading nil          nil        nil
//	               in place (reload.go: reload set)
//	upgrading      serving                     starting      nil        nil
//	saving         the old one, saving         waiting       set        nil
//	restoring      the old one, saved          restoring     set        nil
//	rolling-back   the old one until it has    nil           set until  nil
//	               saved, then the previous                  it serves
//	               binary again, cold                        (nil after
//	                                                         a SIGUSR2)
//	self-upgrading serving (overlap) or saving nil           nil        set
//	retired        nil                         nil           nil        nil
//	stopping       nil                         nil           nil        nil
//
// Events (rows) in each state (columns: starting, serving, probation,
// reloading, upgrading, saving, restoring, rolling-back, self-upgrading,
// retired, stopping). probation is serving with the previous binary, and in handover
// mode the connections and the cutover snapshot, kept (probation.go): any
// request ends it first, then is served as in serving.
// "refused" answers at once with an *UpgradeError of kind Refused and the
// reason given in the handler; "-" cannot happen in that state, or changes
// nothing; "queued" is coalesced into one more upgrade after the running
// one.
//
//	upgrade (SIGHUP, ctl upgrade)
//	  starting       start the next generation → upgrading; queued while
//	                 the first generation starts on stored connections
//	  serving        start the next generation → upgrading (refused while
//	                 the file at the path is a binary rolled back from)
//	  reloading, upgrading, saving, restoring, rolling-back: queued (after
//	                 a reload: once every worker has answered)
//	  self-upgrading, retired, stopping: refused
//	rollback (ctl rollback [--to GEN])
//	  serving        start a held earlier binary as the next generation →
//	                 upgrading; refused when none is held
//	  every other state: refused (not queued: a running upgrade changes
//	                 what "previous" means)
//	reload (ctl reload; reload.go)
//	  serving        signal every ready worker of the current generation
//	                 → reloading; refused at once, nothing signalled, when
//	                 one of them does not catch the reload signal, or none
//	                 is ready
//	  every other state: refused (reloading included: a second reload
//	                 could not tell the first one's answers from its own)
//	reload answered (RELOADING=1, then READY=1 or RELOAD=failed, from each
//	worker signalled; or its exit, or the reload timeout)
//	  reloading      once every worker has answered → serving, the
//	                 result (reload-failed, reload-timeout or ok) to the
//	                 request; then a queued upgrade starts
//	  every other state: - (READY=1 without a reload is a start's)
//	self-upgrade (SIGUSR2)
//	  serving        start the successor → self-upgrading (handover: the
//	                 worker serves until the successor asks, below)
//	  every other state: refused
//	re-exec in place (SIGUSR2 with --self-upgrade exec, and as PID 1;
//	reexec.go)
//	  serving, probation (ended once the re-exec is taken)
//	                 with every worker ready and no other generation:
//	                 quiesce (standbys ended, the notify socket's marker
//	                 handled, events meanwhile handled as here), then exec
//	                 the new image, which adopts the workers and serves; an
//	                 exec that fails leaves this image serving (start-failed)
//	  every other state: refused
//	stop (SIGTERM, SIGINT, ctl stop)
//	  starting … rolling-back: cancel the upgrade or the reload, drain
//	                 every generation → stopping
//	  self-upgrading applied once the successor has answered
//	  retired, stopping: -
//	ready (the last worker of the generation being started said READY=1;
//	a worker started ahead of a handover is ready only after GO)
//	  starting, rolling-back: → serving
//	  upgrading, restoring: the next generation serves, the old one drains
//	                 → serving
//	failed (the next generation exited, was not ready in time, or could not
//	be started or given its connections)
//	  upgrading      kill it → serving (starting if current never was ready)
//	  saving         (only by exiting: no ready timer runs, nothing is passed
//	                 yet) kill it → rolling-back, once the old worker has saved
//	  restoring      kill it, start the previous binary → rolling-back
//	crash (a worker of the current generation exited on its own)
//	  reloading      the reload fails for it (reload-failed) once the
//	                 others have answered; it is restarted as below
//	  probation      rolled back by itself: overlap: start the previous
//	                 binary → upgrading; handover: the previous binary,
//	                 cold, on the kept connections and the cutover snapshot
//	                 → rolling-back
//	  other states   restarted with back-off (below); in starting, after
//	                 StartAttempts failed starts of the first generation:
//	                 → stopping, and Run returns the reason
//	probation ends (the timer)
//	  probation      → serving
//	save failed (HANDOVER=failed from the old worker)
//	  saving         kill the next generation, the old one serves again
//	                 → serving (save-failed)
//	  rolling-back   (before the old worker saved) → serving
//	  self-upgrading (handover, saving) → serving (save-failed)
//	  retired, stopping (handover) the worker is killed: it would serve on
//	                 until the drain timeout; the log names the snapshot
//	                 left
//	waiting (handover: the new worker is initialised)
//	  upgrading      the old worker saves → saving
//	  starting       (a first generation started ahead for a predecessor
//	                 supervisor, predecessor.go) the predecessor's worker
//	                 saves; its connections come back, GO; a failure of the
//	                 generation before it is ready → stopping, Run returns it
//	successor asks for the handover (its first worker is initialised)
//	  self-upgrading (handover) the worker saves for it
//	saved (the old worker said HANDOVER=saved, or exited while saving)
//	  saving         pass the connections, GO → restoring
//	  rolling-back   start the previous binary on the snapshot
//	  self-upgrading pass the connections to the successor
//	successor ready
//	  self-upgrading → retired: our workers drain
//	successor failed
//	  self-upgrading overlap, or before it asked: → serving; handover, once
//	                 the worker saved: the previous binary starts again on
//	                 the snapshot → rolling-back
//	drained (no worker left)
//	  retired, stopping: Run returns
//
// A worker of the current generation that crashes is restarted with
// back-off in every state that has a current generation, except one that
// is saving or has saved (it drains), and probation; the watchdog, STATUS=
// and the drain timeout are per worker, in every state. An upgrade whose
// old worker died or hung while saving serves, but ends with kind
// state-lost, which names what was lost.
type state int

const (
	stateStarting state = iota
	stateServing
	stateProbation
	stateReloading
	stateUpgrading
	stateSaving
	stateRestoring
	stateRollingBack
	stateSelfUpgrading
	stateRetired
	stateStopping
)

var stateNames = [...]string{"starting", "serving", "probation", "reloading", "upgrading", "saving", "restoring",
	"rolling-back", "self-upgrading", "retired", "stopping"}

func (st state) String() string { return stateNames[st] }

// setState is the only place where the state changes.
func (s *Supervisor) setState(to state) {
	if to == s.state {
		return
	}
	s.log.Debug().Str("from", s.state.String()).Str("to", to.String()).Msg("state")
	s.state = to
}

// checkInvariants says which field disagrees with the state; tests run it
// after every event.
func (s *Supervisor) checkInvariants() error {
	has := func(set bool, name string, states ...state) error {
		for _, st := range states {
			if st == s.state {
				if !set {
					return errors.New(s.state.String() + ": no " + name)
				}
				return nil
			}
		}
		if set {
			return errors.New(s.state.String() + ": " + name + " set")
		}
		return nil
	}
	if err := has(s.next != nil, "next generation", stateUpgrading, stateSaving, stateRestoring); err != nil {
		return err
	}
	if err := has(s.self != nil, "self-upgrade", stateSelfUpgrading); err != nil {
		return err
	}
	if err := has(s.probation != nil, "probation", stateProbation); err != nil {
		return err
	}
	if err := has(s.reload != nil, "reload", stateReloading); err != nil {
		return err
	}
	if s.state == stateReloading && (s.current == nil || s.reload.gen != s.current) {
		return errors.New("reloading: not the current generation")
	}
	if s.handover != nil && s.state != stateSaving && s.state != stateRestoring && s.state != stateRollingBack {
		return errors.New(s.state.String() + ": handover set")
	}
	if (s.state == stateSaving || s.state == stateRestoring) && s.handover == nil {
		return errors.New(s.state.String() + ": no handover")
	}
	if s.current != nil && (s.state == stateRetired || s.state == stateStopping) {
		return errors.New(s.state.String() + ": a current generation")
	}
	if s.rollingBack != nil && s.state != stateRollingBack {
		return errors.New(s.state.String() + ": a rollback run")
	}
	if len(s.queued) > 0 && s.state != stateStarting && s.state != stateReloading && s.state != stateUpgrading && s.state != stateSaving &&
		s.state != stateRestoring && s.state != stateRollingBack {
		return errors.New(s.state.String() + ": a queued upgrade")
	}
	return nil
}

// onUpgradeRequest: an upgrade of the workers was asked for.
func (s *Supervisor) onUpgradeRequest(reply chan Result, trigger string) {
	switch s.state {
	case stateStarting:
		if len(s.store) > 0 {
			s.queue(reply, trigger, "the first generation must take the stored connections first")
			return
		}
		s.startUpgrade(upgradeSource{trigger: trigger}, []chan Result{reply})
	case stateServing, stateProbation:
		s.endProbation("an upgrade was asked for")
		s.startUpgrade(upgradeSource{trigger: trigger}, []chan Result{reply})
	case stateReloading:
		s.queue(reply, trigger, "a reload is running")
	case stateUpgrading, stateSaving, stateRestoring:
		s.queue(reply, trigger, "an upgrade is running")
	case stateRollingBack:
		s.queue(reply, trigger, "a rollback is running")
	case stateSelfUpgrading:
		s.refuseUpgrade(reply, refused("the supervisor is upgrading itself (SIGUSR2): upgrade the workers once that is done"))
	case stateRetired:
		s.refuseUpgrade(reply, refused("this supervisor has handed over to its successor: ask the new supervisor"))
	case stateStopping:
		s.refuseUpgrade(reply, stoppingError(0, KindRefused))
	}
}

// onRollbackRequest: ctl rollback [--to GEN]. A rollback is an upgrade
// from a held binary; it is not queued behind a running upgrade, whose
// outcome changes what "previous" means.
func (s *Supervisor) onRollbackRequest(reply chan Result, to int) {
	var err *UpgradeError
	switch s.state {
	case stateServing, stateProbation:
		var target *held
		if target, err = s.rollbackTarget(to); err == nil {
			s.endProbation("a rollback was asked for")
			s.startUpgrade(upgradeSource{held: target, trigger: history.TriggerCtl, why: "asked for (ctl rollback)"},
				[]chan Result{reply})
			return
		}
	case stateStarting:
		err = refused("the first generation is not ready yet: there is nothing to roll back")
	case stateReloading:
		err = refused("a reload is running: roll back once it has finished (ctl status says)")
	case stateUpgrading, stateSaving, stateRestoring, stateRollingBack:
		err = refused("an upgrade or a rollback is running: roll back once it has finished (ctl status says)")
	case stateSelfUpgrading:
		err = refused("the supervisor is upgrading itself (SIGUSR2): roll back once that is done")
	case stateRetired:
		err = refused("this supervisor has handed over to its successor: ask the new supervisor")
	case stateStopping:
		err = stoppingError(0, KindRefused)
	}
	s.refuseUpgrade(reply, err)
}

func (s *Supervisor) queue(reply chan Result, trigger, why string) {
	s.queued = append(s.queued, reply)
	s.queuedTrigger = trigger
	ev := s.log.Info().Str("state", s.state.String()).Str("reason", why)
	if s.next != nil {
		ev = ev.Int("gen", s.next.n)
	}
	ev.Msg("upgrade coalesced")
}

func (s *Supervisor) refuseUpgrade(reply chan Result, err *UpgradeError) {
	s.log.Warn().Str("state", s.state.String()).Str("kind", string(err.Kind)).Str("reason", err.Reason).
		Msg("upgrade refused")
	reply <- Result{Err: err}
}

// onSelfUpgradeRequest: SIGUSR2.
func (s *Supervisor) onSelfUpgradeRequest(reply chan Result) {
	var err *UpgradeError
	switch s.state {
	case stateServing, stateProbation:
	case stateStarting:
		err = refused("this supervisor's first generation is not ready yet: send SIGUSR2 again once it is")
	case stateReloading:
		err = refused("a reload is running: try again once it has finished")
	case stateUpgrading, stateSaving, stateRestoring, stateRollingBack:
		err = refused("an upgrade is running: try again once it has finished")
	case stateSelfUpgrading:
		err = refused("a self-upgrade is already running")
	case stateRetired:
		err = refused("this supervisor has handed over to its successor and is only draining its workers")
	case stateStopping:
		err = stoppingError(0, KindRefused)
	}
	if err == nil && s.cfg.Successor == nil {
		err = refused("this supervisor cannot start a successor")
	}
	if err == nil {
		if perr := s.cfg.Successor.Prepare(); perr != nil {
			err = refused(perr.Error())
		}
	}
	if err != nil {
		err.SelfUpgrade = true
		s.finishSelfUpgrade(reply, err)
		return
	}
	s.endProbation("the supervisor upgrades itself")
	s.startSelfUpgrade(reply)
}

// onStop: drain everything, the generation being started included (it may
// already have accepted connections).
func (s *Supervisor) onStop() {
	switch s.state {
	case stateStopping:
		return
	case stateRetired:
		s.log.Info().Msg("stop: this supervisor has handed over to its successor and is already draining its workers")
		return
	case stateSelfUpgrading:
		s.self.stopAfter = true
		s.log.Info().Msg("stop requested during the self-upgrade: it begins once the new supervisor has answered")
		return
	}
	s.endProbation("stopping")
	s.stopAll()
}

func (s *Supervisor) stopAll() {
	s.setState(stateStopping)
	s.log.Info().Msg("stopping: draining every generation")
	defer s.observe(Stopping)
	s.answerQueued(stoppingError(0, KindRefused))
	s.cancelReload()
	s.rollingBack, s.rollbackWaiting = nil, false
	if g := s.next; g != nil {
		s.next = nil
		s.log.Warn().Int("gen", g.n).Str("binary", g.binary).Str("reason", "stopping").
			Str("kind", string(KindCancelled)).Str("result", "cancelled").Msg("upgrade cancelled")
		reply(s.waiters, Result{Gen: g.n, Err: stoppingError(g.n, KindCancelled)})
		s.waiters = nil
		s.drain(g)
	}
	s.handover = nil
	if g := s.current; g != nil {
		s.current = nil
		s.drain(g)
	}
}

// onGenerationReady: the last worker of g became ready.
func (s *Supervisor) onGenerationReady(g *generation) {
	g.readyTime = time.Since(g.started)
	g.everReady = true
	g.phase = serving
	s.hashBinary(g) // now, not while it starts: it would compete with its start-up
	s.log.Info().Int("gen", g.n).Ints("pids", g.pids()).Str("binary", g.binary).
		Float64("ready_ms", ms(g.readyTime)).Msg("generation ready")
	switch {
	case g == s.next && (s.state == stateUpgrading || s.state == stateRestoring):
		s.promote(g)
	case g == s.current && (s.state == stateStarting || s.state == stateRollingBack):
		s.clearStore() // a cold start, or a start ahead, got the stored connections
		if g.ahead {
			g.ahead = false
			s.log.Info().Int("gen", g.n).Int("connections", g.inherited).Msg("self-upgrade: the first worker restored the previous supervisor's snapshot and connections")
		}
		s.handover = nil
		s.hold(g)
		if r := s.rollingBack; r != nil {
			s.rollingBack = nil
			s.rollbackServed(g, r)
		}
		s.setState(stateServing)
		s.firstReady()
		s.startQueued()
	case g == s.current:
		// The first generation, ready while an upgrade or a self-upgrade
		// runs; or a generation whose workers all restarted after crashes.
		s.hold(g)
		s.firstReady()
	}
}

// onNextFailed: the generation being started will not serve.
func (s *Supervisor) onNextFailed(g *generation, kind Kind, reason string) {
	if g != s.next {
		return
	}
	g.phase = failed
	s.next = nil
	s.killGeneration(g)
	s.release(g.exe)
	fail := &UpgradeError{Gen: g.n, Kind: kind, Reason: reason}
	switch s.state {
	case stateUpgrading:
		s.setState(stateServing)
		if s.current != nil && !s.current.everReady {
			s.setState(stateStarting)
		}
		s.restartEmptySlots(s.current) // a rollback on probation that failed: the bad one is all there is
	case stateSaving:
		fail.Reason += "; the previous binary restarts once the old worker has saved"
		fail.RolledBack = true
		s.setState(stateRollingBack)
	case stateRestoring:
		h := s.handover
		fail.RolledBack = h.old != nil
		if h.old != nil {
			fail.Reason += "; rolled back to the previous binary with the same snapshot and connections"
		}
		s.setState(stateRollingBack)
		s.rollback(h.old.binary, h.old.exe, h.old.n, reason)
	}
	s.log.Error().Int("gen", g.n).Str("binary", g.binary).Str("kind", string(kind)).Str("reason", fail.Reason).
		Bool("rolled_back", fail.RolledBack).Str("result", "failed").Msg("upgrade failed")
	s.reapGeneration(g)
	s.finishUpgrade(g, Result{Gen: g.n, Err: fail})
}

// onSaved: the old worker committed its snapshot and stored its
// connections, or exited before it could (note says which snapshot is
// restored then).
func (s *Supervisor) onSaved(from *generation, note string) {
	switch {
	case s.state == stateSelfUpgrading && s.cfg.Handover && s.self.asked && from == s.self.old && !s.self.saved:
		s.selfSaved(note)
	case (s.state == stateSaving || s.state == stateRollingBack) && s.handover != nil &&
		from == s.handover.old && !s.handover.saved:
		h := s.handover
		h.saved = true
		if s.state == stateRollingBack {
			s.rollback(h.old.binary, h.old.exe, h.old.n, "the new worker failed")
			return
		}
		s.setState(stateRestoring)
		h.cutover = s.keepCutover()
		s.sendGo(h, note)
	}
}

// onSuccessor: the successor supervisor answered.
func (s *Supervisor) onSuccessor(err error) {
	if s.state != stateSelfUpgrading {
		return
	}
	ss := s.self
	s.self = nil
	if err == nil {
		s.clearStore() // the successor has the connections
		if s.current == ss.old && s.cfg.Handover {
			s.current = nil
			s.reapGeneration(ss.old)
		}
		switch {
		case s.cfg.Handover && ss.asked:
			s.log.Info().Int("connections", ss.conns).Float64("successor_ready_ms", ms(time.Since(ss.saveBegan))).
				Msg("self-upgrade: the new supervisor's worker restored the snapshot and connections")
		case s.cfg.Handover && ss.lost == "":
			ss.lost = "the new supervisor served without asking for this worker's state (is it an older build?): " +
				"the worker saves a shutdown snapshot and closes its connections as it drains"
		}
		if ss.lost != "" {
			s.log.Error().Str("lost", ss.lost).Str("result", "lost").Msg("self-upgrade finished: the new supervisor serves, but players lost state")
			s.finishSelfUpgrade(ss.reply, &UpgradeError{Kind: KindStateLost, SelfUpgrade: true,
				Reason: "the new supervisor serves, but " + ss.lost})
		} else {
			s.log.Info().Str("result", "ok").Msg("self-upgrade succeeded: the new supervisor serves; draining this one's workers")
			s.finishSelfUpgrade(ss.reply, nil)
		}
		s.retire()
		return
	}
	fail := &UpgradeError{Kind: KindSuccessor, Reason: err.Error(), SelfUpgrade: true}
	s.setState(stateServing)
	ss.answerHandOver(handOverResult{err: err})
	if s.cfg.Handover && ss.asked && !ss.saved && !ss.stopAfter {
		// Our worker is saving: it starts again once it has saved, as
		// after a next generation that failed while the old one saved.
		fail.RolledBack = true
		s.handover = &handover{old: ss.old, began: ss.saveBegan}
		s.setState(stateRollingBack)
	} else if s.cfg.Handover && ss.saved {
		if ss.stopAfter {
			s.clearStore()
		} else {
			fail.RolledBack = true
			s.setState(stateRollingBack)
			s.rollback(ss.old.binary, ss.old.exe, ss.old.n, "supervisor self-upgrade failed: "+err.Error())
		}
	}
	s.finishSelfUpgrade(ss.reply, fail)
	if ss.stopAfter {
		s.stopAll()
	}
}

// retire drains our workers once a successor supervisor serves.
func (s *Supervisor) retire() {
	s.setState(stateRetired)
	if g := s.current; g != nil {
		s.current = nil
		s.drain(g)
	}
}

// finished reports whether Run may return: stopping or retired, and no
// worker left.
func (s *Supervisor) finished() bool {
	if s.state != stateStopping && s.state != stateRetired {
		return false
	}
	if s.standbys > 0 { // killed (standby.go): their exits are due
		return false
	}
	for _, g := range s.gens {
		if g.alive() > 0 {
			return false
		}
	}
	for _, g := range s.gens {
		g.notify.Close()
	}
	return true
}
