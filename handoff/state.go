package handoff

import (
	"context"
	"errors"
	"fmt"
	"log"
	"sync"
	"time"
)

// SaveKind says why State.Save is called; its String is "autosave",
// "handover" or "shutdown".
type SaveKind int

const (
	// SaveAutosave is a periodic save while the worker serves: it bounds what
	// a crash loses. It runs on its own goroutine, concurrently with the
	// worker's service.
	SaveAutosave SaveKind = iota + 1
	// SaveHandover is the save on the drain signal in handover mode, once the
	// worker has stopped serving: the next worker restores it, and resumes
	// the connections handed over with it.
	SaveHandover
	// SaveShutdown is the save on the drain signal outside handover mode: the
	// service stops, and its connections with it.
	SaveShutdown
)

func (k SaveKind) String() string {
	switch k {
	case SaveAutosave:
		return "autosave"
	case SaveHandover:
		return "handover"
	case SaveShutdown:
		return "shutdown"
	}
	return fmt.Sprintf("SaveKind(%d)", int(k))
}

// State is a stateful worker's data (the players, not the code that runs on
// them) as handover mode moves it from worker to worker: restored at start,
// saved now and then while the worker serves, and saved with the
// connections on the drain signal. Set its fields, then:
//
//	Start     AwaitHandover, then Restore(Path) and Resume(the connections)
//	Ready     READY=1, then Save(SaveAutosave) every Autosave
//	HandOver  once the drain signal came and the worker stopped serving: stop
//	          the autosaves, then in handover mode Save(SaveHandover),
//	          StoreConns and HandoverSaved; otherwise Save(SaveShutdown)
//
// The file's format is the worker's own; package state writes and reads one
// atomically, with checksums and schema versions.
type State struct {
	// Worker is the worker the state lives in. Required.
	Worker *Worker
	// Path is the snapshot file. Empty: the supervisor's (SnapshotPath); when
	// that is empty too, nothing is ever saved and Restore gets "".
	Path string
	// Autosave is the period of the autosaves; 0 turns them off.
	Autosave time.Duration

	// Restore reads the state from path. A missing file is a first start:
	// Restore starts afresh. Required.
	Restore func(path string) error
	// Resume takes over the connections handed over (with the previous
	// worker's state, or passed to a cold start), under the names they were
	// stored with, once Restore has succeeded: it serves each one, or closes
	// it. nil: they are closed.
	Resume func(conns []Conn)
	// Save writes the state to path, atomically: a save that fails or stops
	// half-way must leave the previous file as it was. For an autosave, ctx
	// ends when HandOver stops the autosaves: Save then returns early, and
	// may return nil without writing when nothing changed since the last
	// save. Required.
	Save func(ctx context.Context, path string, kind SaveKind) error
	// Logf reports autosaves that failed; nil means log.Printf.
	Logf func(format string, args ...any)

	mu       sync.Mutex
	ready    bool
	cancel   context.CancelFunc // stops the autosaves
	autosave chan struct{}      // closed when the autosave goroutine has returned
}

// path is the snapshot file, "" when nothing is saved.
func (s *State) path() string {
	if s.Path != "" {
		return s.Path
	}
	return s.Worker.SnapshotPath()
}

// Start takes the state over: it waits for the previous worker's handover
// (AwaitHandover; ctx bounds the wait, and the drain signal ends it with
// ErrHandoverAborted), then calls Restore and Resume. Restore runs while the
// last connections handed over are still being made ready (a dozen system
// calls each), on other goroutines. If Restore fails, the connections are
// closed and its error returned. Call Start once the worker is initialised,
// before it accepts connections.
func (s *State) Start(ctx context.Context) error {
	if s.Worker == nil || s.Restore == nil || s.Save == nil {
		return errors.New("handoff: State needs a Worker, Restore and Save")
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-s.Worker.Draining():
			cancel(ErrHandoverAborted)
		case <-stop:
		}
	}()
	conns, pending, err := s.Worker.awaitHandover(ctx)
	if err != nil {
		closeConns(append(conns, pending.wait()...))
		if cause := context.Cause(ctx); cause != nil && errors.Is(err, context.Canceled) {
			err = cause
		}
		return err
	}
	err = s.Restore(s.path())
	conns = append(conns, pending.wait()...)
	switch {
	case err != nil:
		closeConns(conns)
		return err
	case s.Resume != nil:
		s.Resume(conns)
	default:
		closeConns(conns)
	}
	return nil
}

// Ready tells the supervisor that the worker serves (Worker.Ready) and starts
// the autosaves: only now, so that a new build that fails before it serves
// never overwrites the snapshot its rollback restores.
func (s *State) Ready() error {
	s.mu.Lock()
	if !s.ready && s.Autosave > 0 && s.path() != "" {
		ctx, cancel := context.WithCancel(context.Background())
		s.cancel, s.autosave = cancel, make(chan struct{})
		go s.autosaveLoop(ctx, s.path())
	}
	s.ready = true
	s.mu.Unlock()
	return s.Worker.Ready()
}

func (s *State) autosaveLoop(ctx context.Context, path string) {
	defer close(s.autosave)
	t := time.NewTicker(s.Autosave)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.Save(ctx, path, SaveAutosave); err != nil && ctx.Err() == nil {
			s.logf("handoff: autosave to %s: %v", path, err)
		}
	}
}

func (s *State) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
		return
	}
	log.Printf(format, args...)
}

// stopAutosave ends the autosaves and waits for one in progress, which its
// context abandons: it cannot delay the last save, nor commit after it.
func (s *State) stopAutosave() {
	s.mu.Lock()
	cancel, done := s.cancel, s.autosave
	s.cancel = nil
	s.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// HandOver saves the state for whoever comes next. Call it after the drain
// signal, once the worker has stopped serving and nothing changes the state
// any more. It stops the autosaves, then:
//
//   - in handover mode: Save(SaveHandover), StoreConns(conns), HandoverSaved.
//     The next worker restores the snapshot and gets conns. If Save fails,
//     nothing is stored nor said: the worker should exit, and the supervisor
//     restores the last complete snapshot. Connections that could not be
//     stored are named in the error, but HANDOVER=saved is still sent: the
//     others go on.
//   - otherwise: Save(SaveShutdown). conns are not stored: the caller says
//     goodbye on them and closes them.
//
// With no snapshot path nothing is saved; in handover mode that is an error.
// The worker keeps its copies of conns: close them, or just exit.
func (s *State) HandOver(conns []Conn) error {
	s.stopAutosave()
	path := s.path()
	if !s.Worker.HandoverMode() {
		if path == "" {
			return nil
		}
		return s.Save(context.Background(), path, SaveShutdown)
	}
	if path == "" {
		return errors.New("handoff: handover: no snapshot path (neither State.Path nor the supervisor's)")
	}
	if err := s.Save(context.Background(), path, SaveHandover); err != nil {
		return fmt.Errorf("handoff: handover: saving: %w; not handing over: the supervisor restores the last complete snapshot", err)
	}
	var storeErr error
	if len(conns) > 0 {
		storeErr = s.Worker.StoreConns(conns)
	}
	return errors.Join(storeErr, s.Worker.HandoverSaved())
}
