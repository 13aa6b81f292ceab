package supervisor

import (
	"errors"
	"io/fs"
	"os"
	"strconv"
	"time"

	"github.com/procswitch/supervisor/internal/history"
	"golang.org/x/sys/unix"
)

// Probation: a bad build usually fails on its first real requests, after it
// said it was ready. For Config.Probation after an upgrade took over, the
// binary that served before stays held, and in handover mode so do the
// supervisor's copies of the handed-over connections and the cutover
// snapshot (a hard link to the snapshot the new worker restored: the
// package state replaces a snapshot by rename, so the link keeps the old
// content). If a worker of the new generation exits meanwhile, or the
// watchdog finds it hung, the supervisor rolls back by itself:
//
//   - overlap mode: the previous binary starts as a new generation on the
//     same sockets, an upgrade like any other (state upgrading); the bad
//     generation's other workers serve until it is ready.
//   - handover mode: the previous binary starts cold on the kept connections
//     and the cutover snapshot (state rolling-back): players keep their
//     connections and lose what happened since the cutover, which the log
//     and the history say.
//
// The bad binary is marked: it is never started again, by a crash restart
// or by an upgrade from the path while that file is unchanged. A crash after
// probation is a plain crash restart.

// probation is the current generation's trial after an upgrade.
type probation struct {
	gen     *generation
	prev    *held // what a failure rolls back to
	until   time.Time
	timer   *time.Timer
	kept    []stored // handover mode: the connections as they were handed over
	cutover string   // handover mode: the cutover snapshot, a hard link; "" if none
	cutAt   time.Time
}

type probationEndEvent struct{ gen *generation }

// cutoverPath names the hard link to the snapshot a handover restored.
func (s *Supervisor) cutoverPath() string { return s.cfg.SnapshotPath + ".cutover" }

// keepCutover links the snapshot the new worker is about to restore, before
// GO: it is what a rollback on probation restores.
func (s *Supervisor) keepCutover() string {
	if s.cfg.Probation <= 0 || s.cfg.SnapshotPath == "" {
		return ""
	}
	link := s.cutoverPath()
	os.Remove(link)
	if err := os.Link(s.cfg.SnapshotPath, link); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn().Err(err).Msg("probation: cannot keep the cutover snapshot: a rollback on probation will restore the latest one")
		}
		return ""
	}
	return link
}

// startProbation puts g, just promoted, on probation if there is something
// to roll back to; kept are the handed-over connections (handover mode),
// which it now owns. sameFile: g runs the very file the generation it
// replaced ran (a SIGHUP without a new build), so there is no other build to
// blame or go back to: a crash is a plain crash restart.
func (s *Supervisor) startProbation(g *generation, kept []stored, cutover string, sameFile bool) bool {
	prev := s.previous()
	if s.cfg.Probation <= 0 || prev == nil || g.rollback || sameFile {
		closeStored(kept)
		removeCutover(cutover)
		return false
	}
	p := &probation{gen: g, prev: prev, until: time.Now().Add(s.cfg.Probation), kept: kept,
		cutover: cutover, cutAt: time.Now()}
	p.timer = time.AfterFunc(s.cfg.Probation, func() { s.send(probationEndEvent{gen: g}) })
	s.probation = p
	s.setState(stateProbation)
	s.log.Info().Int("gen", g.n).Int("previous_gen", prev.gen()).Dur("probation", s.cfg.Probation).
		Int("kept_connections", len(kept)).Bool("cutover_snapshot", cutover != "").
		Msg("probation: a crash or a hang rolls back to the previous binary until it ends")
	return true
}

// endProbation releases what probation kept; why goes to the log.
func (s *Supervisor) endProbation(why string) {
	p := s.probation
	if p == nil {
		return
	}
	s.probation = nil
	p.timer.Stop()
	closeStored(p.kept)
	removeCutover(p.cutover)
	s.setState(stateServing)
	s.log.Info().Int("gen", p.gen.n).Str("reason", why).Msg("probation ended")
}

func (s *Supervisor) onProbationEnd(g *generation) {
	if s.state != stateProbation || s.probation.gen != g {
		return
	}
	s.endProbation("passed: no crash or hang")
	s.startQueued()
}

// onProbationFailure: a worker of the generation on probation exited or
// hung: roll back to the previous binary.
func (s *Supervisor) onProbationFailure(g *generation, reason string) {
	p := s.probation
	s.probation = nil
	p.timer.Stop()
	why := "generation " + itoa(g.n) + " failed on probation: " + reason
	s.markBad(g, why)
	g.bad = true
	s.log.Error().Int("gen", g.n).Int("previous_gen", p.prev.gen()).Str("reason", reason).
		Msg("probation failed: rolling back to the previous binary")
	if !s.cfg.Handover {
		removeCutover(p.cutover)
		s.setState(stateServing)
		s.startUpgrade(upgradeSource{held: p.prev, trigger: history.TriggerProbation, why: why}, nil)
		if s.next == nil {
			s.restartEmptySlots(s.current) // the previous binary did not start: the bad one is all there is
		}
		return
	}
	// Handover mode: the previous binary, cold, on the kept connections and
	// the cutover snapshot. Whatever the bad worker still runs goes.
	lost := "play since the cutover " + time.Since(p.cutAt).Round(time.Millisecond).String() + " ago, and connections opened since"
	if p.cutover == "" {
		lost = "play since the last snapshot the bad worker wrote, and connections opened since the cutover"
	} else if err := os.Rename(p.cutover, s.cfg.SnapshotPath); err != nil {
		lost = "the cutover snapshot could not be restored (" + err.Error() + "): play since the bad worker's last snapshot"
	} else {
		// rename(2) onto another link of the same file (the bad worker
		// wrote no snapshot since) succeeds and does nothing.
		os.Remove(p.cutover)
	}
	s.killGeneration(g)
	s.current = nil
	s.drain(g)
	s.reapGeneration(g)
	closeStored(s.store)
	s.store = p.kept
	s.setState(stateRollingBack)
	s.rollingBack = &rollbackRun{trigger: history.TriggerProbation, from: g.n, lost: lost, why: why}
	s.rollback(p.prev.binary, p.prev.exe, g.n, why)
}

func closeStored(st []stored) {
	for _, c := range st {
		unix.Close(c.fd)
	}
}

func removeCutover(path string) {
	if path != "" {
		os.Remove(path)
	}
}

// rollbackServed records a rollback on probation (handover mode) once its
// generation serves.
func (s *Supervisor) rollbackServed(g *generation, r *rollbackRun) {
	rec := history.Record{Event: history.EventRollback, Trigger: r.trigger, Gen: g.n, FromGen: r.from,
		Binary: g.binary, Version: g.version, Result: history.ResultOK, ReadyMS: ms(g.readyTime), Reason: r.why}
	ev := s.log.Warn()
	if r.lost != "" {
		rec.Result, rec.Kind, rec.Lost = history.ResultLost, string(KindStateLost), r.lost
		ev = ev.Str("lost", r.lost)
	}
	ev.Int("gen", g.n).Int("bad_gen", r.from).Float64("ready_ms", ms(g.readyTime)).Str("result", rec.Result).
		Msg("rolled back on probation: the previous binary serves")
	s.record(rec)
}

// restartEmptySlots restarts, with back-off, the workers of g that are
// neither running nor waiting to restart.
func (s *Supervisor) restartEmptySlots(g *generation) {
	if g == nil || g.phase == draining {
		return
	}
	for _, sl := range g.slots {
		if sl.worker == nil && sl.restart == nil {
			s.scheduleRestart(g, sl, nil)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
