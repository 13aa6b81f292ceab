package supervisor

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// StoredConn is a client connection in the fd store, as a supervisor that
// upgrades its own binary (SIGUSR2, handover mode) passes it on to its
// successor: the successor's first generation receives it among LISTEN_FDS
// with the snapshot, as after a crash.
type StoredConn struct {
	Name string
	FD   int // owned by the supervisor from New on
}

// adoptStored puts connections a predecessor passed on into the fd store.
func (s *Supervisor) adoptStored(conns []StoredConn) {
	for _, c := range conns {
		s.store = append(s.store, stored{name: c.Name, fd: c.FD})
	}
}

// A self-upgrade in handover mode: the current worker saves and hands its
// connections to the fd store, as for an upgrade, but no new worker of this
// supervisor takes them; the successor supervisor does. If the successor
// fails, Resume rolls back: the same binary starts again, cold, on the same
// snapshot and connections.

// successorSave is a self-upgrade's save in progress.
type successorSave struct {
	reply chan successorResult
	old   *generation
	began time.Time
	done  bool
}

type successorResult struct {
	conns []StoredConn
	err   error
}

type (
	successorRequest struct{ reply chan successorResult }
	resumeRequest    struct{ reason string }
	releaseRequest   struct{ done chan struct{} }
)

// SaveForSuccessor, in handover mode, tells the current worker to save its
// state and store its connections, and returns duplicates of the stored
// connections to pass to the successor once the worker has saved (or died
// trying: then the last complete snapshot serves). Every other request
// waits meanwhile. Outside handover mode it returns nothing at once. After a
// successful call, call Resume or Release.
func (s *Supervisor) SaveForSuccessor() ([]StoredConn, error) {
	if !s.cfg.Handover {
		return nil, nil
	}
	reply := make(chan successorResult, 1)
	if !s.send(successorRequest{reply: reply}) {
		return nil, ErrStopping
	}
	r := <-reply
	return r.conns, r.err
}

// Resume rolls back after a failed self-upgrade in handover mode: the saved
// worker's binary starts again on the snapshot and stored connections.
func (s *Supervisor) Resume(reason string) { s.send(resumeRequest{reason: reason}) }

// Release forgets the stored connections: the successor has them.
func (s *Supervisor) Release() {
	done := make(chan struct{})
	if s.send(releaseRequest{done: done}) {
		<-done
	}
}

func (s *Supervisor) onSuccessorRequest(reply chan successorResult) {
	g := s.current
	switch {
	case s.stopping:
		reply <- successorResult{err: ErrStopping}
		return
	case s.upgrading != nil || s.handover != nil || s.succ != nil:
		reply <- successorResult{err: errors.New("an upgrade is running: try again once it has finished")}
		return
	case g == nil || g.phase != serving:
		reply <- successorResult{err: errors.New("no generation is serving: nothing to hand over")}
		return
	}
	s.succ = &successorSave{reply: reply, old: g, began: time.Now()}
	s.log.Info().Int("gen", g.n).Ints("pids", g.pids()).Msg("self-upgrade: worker saving for the new supervisor")
	s.drain(g)
	if g.alive() == 0 {
		s.succSaved("")
	}
}

// succSaved answers SaveForSuccessor once the worker saved, or died trying
// (note says how old the snapshot used is).
func (s *Supervisor) succSaved(note string) {
	ss := s.succ
	if ss == nil || ss.done {
		return
	}
	ss.done = true
	conns := make([]StoredConn, 0, len(s.store))
	s.dropHungUp()
	for _, st := range s.store {
		fd, err := unix.FcntlInt(uintptr(st.fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			for _, c := range conns {
				unix.Close(c.FD)
			}
			ss.reply <- successorResult{err: fmt.Errorf("duplicating a stored connection: %w", err)}
			return
		}
		conns = append(conns, StoredConn{Name: st.name, FD: fd})
	}
	ev := s.log.Info()
	if note != "" {
		ev = s.log.Warn().Str("snapshot_age", note)
	}
	ev.Int("gen", ss.old.n).Int("connections", len(conns)).Float64("save_ms", ms(time.Since(ss.began))).
		Msg("self-upgrade: snapshot saved for the new supervisor")
	ss.reply <- successorResult{conns: conns}
}

func (s *Supervisor) onResume(reason string) {
	ss := s.succ
	if ss == nil {
		return
	}
	s.succ = nil
	if s.stopping {
		s.clearStore()
		return
	}
	s.rollback(ss.old, "supervisor self-upgrade failed: "+reason)
}

func (s *Supervisor) onRelease() {
	ss := s.succ
	if ss == nil {
		return
	}
	s.succ = nil
	s.clearStore()
	if s.current == ss.old {
		s.current = nil
	}
	s.reapGeneration(ss.old)
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
