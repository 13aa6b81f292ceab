package supervisor

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"
)

// A supervisor that replaces a serving one (SIGUSR2, handover mode) takes
// the predecessor's worker's state the way an upgrade does, with its own
// first generation as the new one, so that a successor that hangs or dies
// while it starts costs no blackout:
//
//  1. The first generation starts ahead (generation.ahead): its worker gets
//     a handover connection and no stored connections, and initialises
//     while the predecessor's worker serves.
//  2. Its WAITING calls Config.Predecessor off the loop: the predecessor's
//     worker saves and stores its connections, and they come back here.
//     The blackout begins.
//  3. They go into the fd store and to the worker, with GO, as in a
//     handover (sendGo); it restores and says READY=1: the generation is
//     ready and this supervisor takes over (the caller's Ready).
//
// Any failure of the generation before it is ready (an exit, a ready
// timeout, a failed save or pass) ends Run with the reason: the successor
// exits, and the predecessor, which waits for it, goes on serving, or
// starts its worker again on its snapshot if it had saved. The successor
// never restarts a worker started ahead: only the predecessor knows whether
// its worker still serves.

// startAhead marks the first generation as started ahead of a handover.
func (s *Supervisor) startAhead(g *generation) {
	g.ahead = true
	s.log.Info().Int("gen", g.n).
		Msg("self-upgrade: the first worker starts ahead; the previous supervisor's worker serves until it is initialised")
}

// onAheadWaiting: the first worker is initialised; ask the predecessor.
func (s *Supervisor) onAheadWaiting(w *worker) {
	g := w.gen
	if s.state != stateStarting || g.asked || w.slot.worker != w {
		return
	}
	g.asked = true
	w.handover.growFDTable()
	w.readyToken++ // the predecessor's save is bounded by its drain timeout; GO re-arms the ready timeout
	s.log.Info().Int("gen", g.n).Int("pid", w.pid()).
		Msg("self-upgrade: first worker initialised; the previous supervisor's worker saves for it")
	handOver := s.cfg.Predecessor
	go func() {
		conns, err := handOver()
		s.send(predecessorEvent{w: w, conns: conns, err: err})
	}()
}

// onPredecessor: the predecessor's worker saved, and these are its
// connections; or it could not save, and serves on.
func (s *Supervisor) onPredecessor(ev predecessorEvent) {
	w := ev.w
	if s.state != stateStarting || w.gen != s.current || w.slot.worker != w {
		for _, c := range ev.conns { // failAhead ended the start meanwhile
			unix.Close(c.FD)
		}
		return
	}
	if ev.err != nil {
		s.failAhead(w.gen, "the previous supervisor could not hand over: "+ev.err.Error())
		return
	}
	s.adoptStored(ev.conns)
	w.gen.inherited = len(ev.conns)
	s.log.Info().Int("gen", w.gen.n).Int("connections", len(ev.conns)).
		Msg("self-upgrade: the previous supervisor's worker saved; restoring")
	s.sendGo(&handover{next: w, began: time.Now()}, "")
}

// failAhead: the first generation, started ahead, will not serve. Run
// returns the reason.
func (s *Supervisor) failAhead(g *generation, reason string) {
	g.ahead = false
	s.clearStore() // duplicates: the predecessor holds its own
	s.fatal = errors.New("self-upgrade: " + reason + "; this supervisor exits, and the previous one goes on serving (or, if its worker had saved, starts it again on the snapshot)")
	s.log.Error().Int("gen", g.n).Str("reason", reason).Str("result", "failed").
		Msg("self-upgrade: the first worker failed; giving up")
	s.stopAll()
}
