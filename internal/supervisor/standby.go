package supervisor

import (
	"time"

	"github.com/procswitch/supervisor/internal/history"
)

// A standby (--standby, handover mode) is a second process of the serving
// generation's binary per slot, started ahead exactly as the new worker of
// a handover is: it gets the live fd store's fds at start, reads its state
// ahead (a game reads its shared-memory region, and keeps up with it) and
// says WAITING. Then it waits, with no time limit (SUPERVISOR_STANDBY=1).
// When the slot's worker crashes, nothing is started: the supervisor
// passes the standby what the store holds since its start and what left it
// (GONE), says CRASHED and GO, and the standby takes over, as after a
// handover but with a restart's notice to the clients. A new standby is
// started once it is ready.
//
// Standbys exist only while the supervisor serves (state serving): an
// upgrade, a reload in place, probation or a stop ends them (SIGKILL: a
// standby holds nothing of its own), and serving again starts them anew,
// from the binary and the scripts then in use. A standby that exits on its
// own is started again after RestartMin, doubling with each consecutive
// exit up to RestartMax.

// standbyRetryEvent: a slot's standby back-off is over.
type standbyRetryEvent struct{ slot *slot }

// reconcileStandbys starts the standbys that are due and ends those that
// are not; the loop calls it after every event.
func (s *Supervisor) reconcileStandbys() {
	if !s.cfg.Standby || s.reexecing {
		return
	}
	for _, g := range s.gens {
		wanted := s.state == stateServing && g == s.current && g.phase == serving
		if !wanted {
			s.endStandbys(g)
			continue
		}
		for _, sl := range g.slots {
			if sl.standby == nil && sl.worker != nil && sl.worker.ready && sl.standbyRetry == nil {
				if _, err := s.launchWorker(g, sl, true); err != nil {
					s.log.Error().Err(err).Int("gen", g.n).Int("slot", sl.index).Msg("standby not started")
					s.retryStandby(sl)
				}
			}
		}
	}
}

// endStandbys kills g's standbys (SIGKILL: a standby holds nothing of its
// own); their exits come as any worker's, whether g is still known or not.
func (s *Supervisor) endStandbys(g *generation) {
	for _, sl := range g.slots {
		if sb := sl.standby; sb != nil && !sb.killed {
			sb.killed = true
			sb.proc.Kill()
		}
	}
}

// retryStandby starts the slot's next standby after the back-off.
func (s *Supervisor) retryStandby(sl *slot) {
	sl.standbyFails++
	delay := s.cfg.backoff(sl.standbyFails)
	sl.standbyRetry = time.AfterFunc(delay, func() { s.send(standbyRetryEvent{slot: sl}) })
}

func (s *Supervisor) onStandbyRetry(sl *slot) { sl.standbyRetry = nil }

// onStandbyWaiting: the standby has read ahead and waits for GO.
func (s *Supervisor) onStandbyWaiting(w *worker) {
	w.standbyWaiting = true
	w.slot.standbyFails = 0
	s.log.Info().Int("gen", w.gen.n).Int("slot", w.slot.index).Int("pid", w.pid()).
		Float64("ready_ms", ms(time.Since(w.proc.StartTime()))).Msg("standby waiting")
}

// onStandbyExit: a standby ended, killed by reconcileStandbys or on its own.
func (s *Supervisor) onStandbyExit(w *worker, status string) {
	sl := w.slot
	sl.standby = nil
	s.standbys--
	if w.handover != nil {
		w.handover.conn.Close()
	}
	if w.killed {
		s.log.Debug().Int("gen", w.gen.n).Int("pid", w.pid()).Msg("standby ended")
		return
	}
	s.log.Warn().Int("gen", w.gen.n).Int("slot", sl.index).Int("pid", w.pid()).Str("status", status).
		Msg("standby exited")
	s.retryStandby(sl)
}

// promoteStandby makes the slot's waiting standby its worker, after the
// worker crashed, the first crash of a series (crashDelay): GO with what
// the store holds since the standby started. It reports false when there
// is no waiting standby.
func (s *Supervisor) promoteStandby(g *generation, sl *slot, dead *worker, status string) bool {
	sb := sl.standby
	if sb == nil || !sb.standbyWaiting || sb.killed || s.state != stateServing || g != s.current {
		return false
	}
	sl.standby, sl.worker = nil, sb
	s.standbys--
	sl.restarts++
	sb.goSent = true
	dropped := s.dropHungUp()
	sb.readyToken++ // the ready timeout counts from GO
	token := sb.readyToken
	time.AfterFunc(s.cfg.ReadyTimeout, func() { s.send(readyTimeoutEvent{w: sb, token: token}) })
	store := s.liveForStart(notIn(sb.prepassed))
	gone := s.live.goneSince(sb.prepassed)
	began := time.Now()
	s.log.Warn().Int("gen", g.n).Int("slot", sl.index).Int("pid", sb.pid()).Int("dead", dead.pid()).
		Msg("standby promoted: it takes the crashed worker's place")
	go func() {
		if err := sb.handover.sendCrashed(store, gone, s.cfg.PassTimeout); err != nil {
			s.send(passFailedEvent{w: sb, err: err})
			return
		}
		s.log.Info().Int("gen", g.n).Int("pid", sb.pid()).Int("connections", len(store)).Int("dropped", dropped).
			Float64("pass_ms", ms(time.Since(began))).Msg("standby: connections passed, GO sent")
	}()
	s.record(history.Record{Event: history.EventCrash, Trigger: history.TriggerCrash, Gen: g.n,
		Binary: g.binary, Version: g.version, Result: history.ResultOK,
		Reason: "worker " + itoa(dead.pid()) + ": " + status + "; standby " + itoa(sb.pid()) + " promoted"})
	s.observe(WorkersChanged)
	return true
}
