package supervisor

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/procswitch/supervisor/internal/history"
	"golang.org/x/sys/unix"
)

// StoredConn is a client connection in the fd store, as a supervisor that
// upgrades its own binary (SIGUSR2, handover mode) passes it on to its
// successor: the successor's first generation receives it among LISTEN_FDS
// with the snapshot, as after a crash.
type StoredConn struct {
	Name string
	FD   int  // owned by the supervisor from New on
	Live bool // from the live fd store (fdstore.go), not the handover's batch
}

// adoptStored puts connections a predecessor passed on into the fd store.
func (s *Supervisor) adoptStored(conns []StoredConn) {
	for _, c := range conns {
		if !c.Live {
			s.store = append(s.store, stored{name: c.Name, fd: c.FD})
		} else if err := s.live.add([]string{c.Name}, []int{c.FD}, false); err != nil {
			s.log.Error().Err(err).Msg("self-upgrade: a stored fd of the previous supervisor does not fit the fd store")
		}
	}
}

// A self-upgrade (SIGUSR2) starts a successor supervisor through
// Config.Successor. In handover mode our worker serves until the
// successor's first worker has initialised and asks for the handover (the
// HandOver given to Start, predecessor.go on the other side); only then does
// it save and hand its connections to the fd store, as for an upgrade, and
// duplicates go to the successor. A successor that hangs or dies before
// that costs nothing: our worker never stopped serving. If it fails after,
// the same binary starts again, cold, on the same snapshot and connections
// (rolling-back).

// selfUpgrade is a self-upgrade in progress.
type selfUpgrade struct {
	reply     chan Result
	old       *generation
	began     time.Time
	saveBegan time.Time           // handover mode: the successor asked; the blackout begins
	handOver  chan handOverResult // handover mode: the successor's request, until answered
	asked     bool                // handover mode: the successor asked for the handover
	saved     bool                // handover mode: the worker saved, or died trying
	conns     int                 // connections passed to the successor
	stopAfter bool                // a stop came meanwhile
	lost      string              // what players lost: the worker died or hung while saving
}

// handOverResult answers a successor's HandOver.
type handOverResult struct {
	conns []StoredConn
	err   error
}

func (s *Supervisor) startSelfUpgrade(reply chan Result) {
	g := s.current
	s.self = &selfUpgrade{reply: reply, old: g, began: time.Now()}
	s.setState(stateSelfUpgrading)
	s.log.Info().Int("gen", g.n).Msg("self-upgrade started")
	s.observe(SelfUpgradeStarted)
	if !s.cfg.Handover {
		s.startSuccessor(nil)
		return
	}
	s.log.Info().Int("gen", g.n).Ints("pids", g.pids()).
		Msg("self-upgrade: the worker serves until the new supervisor's worker has initialised")
	s.startSuccessor(s.handOverToSuccessor)
}

// handOverToSuccessor is the HandOver the successor calls, off the loop.
func (s *Supervisor) handOverToSuccessor() ([]StoredConn, error) {
	reply := make(chan handOverResult, 1)
	errGone := errors.New("the previous supervisor has stopped")
	if !s.send(selfHandOverRequest{reply: reply}) {
		return nil, errGone
	}
	select {
	case r := <-reply:
		return r.conns, r.err
	case <-s.done:
		return nil, errGone
	}
}

// onSelfHandOver: the successor's first worker is initialised: ours saves.
func (s *Supervisor) onSelfHandOver(reply chan handOverResult) {
	ss := s.self
	if s.state != stateSelfUpgrading || !s.cfg.Handover || ss.asked {
		reply <- handOverResult{err: errors.New("no self-upgrade is waiting for a handover")}
		return
	}
	g := ss.old
	ss.asked, ss.handOver, ss.saveBegan = true, reply, time.Now()
	s.log.Info().Int("gen", g.n).Ints("pids", g.pids()).Msg("self-upgrade: the new supervisor's worker is initialised; worker saving for it")
	s.drain(g)
	if g.alive() == 0 {
		s.onSaved(g, "no worker was running: the snapshot is passed on as it is")
	}
}

// answerHandOver answers the successor's HandOver, once.
func (ss *selfUpgrade) answerHandOver(r handOverResult) {
	if ss.handOver != nil {
		ss.handOver <- r
		ss.handOver = nil
	}
}

// selfSaved: the worker saved, or died trying (note says how old the
// snapshot used is): pass duplicates of the stored connections on.
func (s *Supervisor) selfSaved(note string) {
	ss := s.self
	ss.saved = true
	s.dropHungUp()
	live := s.liveForStart(nil)
	conns := make([]StoredConn, 0, len(s.store)+len(live))
	for i, st := range append(live, s.store...) {
		fd, err := unix.FcntlInt(uintptr(st.fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			for _, c := range conns {
				unix.Close(c.FD)
			}
			// The successor gives up; its failure then starts our worker
			// again on the snapshot (onSuccessor).
			ss.answerHandOver(handOverResult{err: fmt.Errorf("duplicating a stored connection: %w", err)})
			return
		}
		conns = append(conns, StoredConn{Name: st.name, FD: fd, Live: i < len(live)})
	}
	ss.conns = len(conns)
	ev := s.log.Info()
	if note != "" {
		ev = s.log.Warn().Str("snapshot_age", note)
	}
	ev.Int("gen", ss.old.n).Int("connections", len(conns)).Float64("save_ms", ms(time.Since(ss.saveBegan))).
		Msg("self-upgrade: snapshot saved for the new supervisor")
	ss.answerHandOver(handOverResult{conns: conns})
}

// startSuccessor runs Successor.Start off the loop; its answer comes back
// as a successorEvent. Orphans are left alone meanwhile, so that tableflip
// gets the successor's exit status.
func (s *Supervisor) startSuccessor(handOver HandOver) {
	release := s.procs.HoldOrphans()
	lastGen := s.lastGen
	go func() {
		err := s.cfg.Successor.Start(lastGen, handOver)
		release()
		s.send(successorEvent{err: err})
	}()
}

// finishSelfUpgrade records and reports a self-upgrade's end.
func (s *Supervisor) finishSelfUpgrade(reply chan Result, err *UpgradeError) {
	u := &UpgradeStatus{OK: err == nil, At: time.Now()}
	rec := history.Record{Event: history.EventSelfUpgrade, Trigger: history.TriggerSIGUSR2, Result: history.ResultOK,
		Gen: s.lastGen}
	if g := s.current; g != nil {
		rec.Gen, rec.Binary, rec.Version = g.n, g.binary, g.version
	}
	if err != nil {
		u.Reason, u.Kind, u.RolledBack = err.Reason, string(err.Kind), err.RolledBack
		rec.Kind = u.Kind
		if err.Kind == KindStateLost { // logged by onSuccessor: the successor serves
			rec.Result, rec.Lost = history.ResultLost, err.Reason
		} else {
			rec.Result, rec.Reason = history.ResultFailed, err.Reason
			s.log.Error().Str("kind", u.Kind).Str("reason", u.Reason).Bool("rolled_back", u.RolledBack).
				Str("result", "failed").Msg("self-upgrade failed: this supervisor goes on serving")
		}
	}
	s.lastSelfUpgrade = u
	if err == nil || err.Kind != KindRefused { // a refusal is not an attempt
		s.record(rec)
	}
	s.observe(SelfUpgradeFinished)
	if err != nil {
		reply <- Result{Err: err}
		return
	}
	reply <- Result{}
}

// snapshotAge says how old the last complete snapshot is, for the log of a
// worker that died while saving.
func (s *Supervisor) snapshotAge() string {
	fi, err := os.Stat(s.cfg.SnapshotPath)
	if err != nil {
		return "no snapshot exists"
	}
	return "the last complete snapshot is " + time.Since(fi.ModTime()).Round(time.Millisecond).String() + " old"
}
