package handoff

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	"github.com/procswitch/supervisor/internal/contract"
)

// SaveKind says why State.Save is called; its String is "autosave",
// "handover" or "shutdown".
type SaveKind int

const (
	SaveAutosave SaveKind = iota + 1 // periodic, while the worker serves, on its own goroutine
	SaveHandover                     // on the drain signal in handover mode, once the worker stopped serving
	SaveShutdown                     // on the drain signal outside handover mode: the service stops
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
//	Start     Prepare(the connections passed at start), wait for the handover,
//	          then Restore(Path) and Resume(the connections)
//	Ready     READY=1, then Save(SaveAutosave) every Autosave
//	HandOver  once the drain signal came and the worker stopped serving: stop
//	          the autosaves, then in handover mode Save(SaveHandover), store
//	          the connections and say HANDOVER=saved (or, when the save
//	          fails, HANDOVER=failed and ErrSaveFailed: serve on);
//	          otherwise Save(SaveShutdown)
//
// Package handoff/handover has these steps one by one.
//
// The file's format is the worker's own; package state writes and reads one
// atomically, with checksums and schema versions.
type State struct {
	Worker   *Worker       // the worker the state lives in; required
	Path     string        // the snapshot file; "": the supervisor's (none: nothing is saved, Restore gets "")
	Autosave time.Duration // the autosaves' period; 0: none

	// Restore reads the state from path; a missing file is a first start.
	// Required.
	Restore func(path string) error
	// Check, when set, says whether Restore could read the snapshot at path
	// (a schema it knows, say; a missing file is fine). Start calls it in a
	// worker started ahead of a handover before it says WAITING, on the
	// current worker's last autosave: a build that could not read it (an
	// older build, in a rollback) then fails while the old worker still
	// serves, instead of after the old worker saved. Start sends its error
	// as STATUS=, so the supervisor's reason for the failed upgrade has it.
	Check func(path string) error
	// Prepare, when set, gets the connections passed at start (a live
	// fd store's), before Start waits for the handover: in a worker
	// started ahead of one, while the previous worker still serves, and
	// before it is told to stop. Whatever is made ready for them here
	// (sessions, their goroutines) is off the blackout. It must not read
	// from or write to them: the previous worker still serves them. Resume
	// gets them again, with those passed with GO, less those the previous
	// worker closed meanwhile (closed by then).
	Prepare func(conns []Conn)
	// Resume takes over the connections handed over (or passed to a cold
	// start) by the names they were stored with, once Restore succeeded: it
	// serves or closes each one. nil: they are closed.
	Resume func(conns []Conn)
	// Save writes the state to path atomically: a failed or abandoned save
	// leaves the previous file as it was. An autosave's ctx ends when
	// HandOver stops the autosaves: return early then; an autosave may skip
	// writing when nothing changed. Required.
	Save func(ctx context.Context, path string, kind SaveKind) error
	// Logf reports failed autosaves; nil: log.Printf.
	Logf func(format string, args ...any)
	// Live says the state lives outside the process, in the supervisor's
	// live fd store (a shared-memory region, and each connection stored as
	// it was accepted: Worker.StoreFD): the next worker maps the same
	// region and gets the same connections, so a handover saves nothing
	// inside the blackout. HandOver then says HANDOVER=saved at once, and
	// only after it writes the snapshot (SaveShutdown), for durability
	// beyond the supervisor's life; the conns given to it are not stored.
	Live bool

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
	return snapshotPath()
}

// Start takes the state over: it waits for the previous worker's handover
// (ctx bounds the wait; the drain signal ends it with ErrHandoverAborted),
// then calls Restore, while the last connections are still being made
// ready, and Resume. If Restore fails, the connections are closed and its
// error returned. Call Start once the worker is initialised, before it
// accepts.
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
	if s.Check != nil && os.Getenv(contract.EnvHandoverFD) != "" {
		if err := s.Check(s.path()); err != nil {
			s.Worker.Status(oneLine("cannot restore "+s.path()+": "+err.Error(), contract.MaxHandoverError))
			return fmt.Errorf("handoff: the snapshot cannot be restored by this build: %w", err)
		}
	}
	conns, pending, err := s.Worker.receiveHandover(ctx, s.Prepare)
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
	s.ready = true
	s.mu.Unlock()
	s.startAutosave()
	return s.Worker.Ready()
}

// startAutosave starts the autosaves, if the worker serves and they are not
// running.
func (s *State) startAutosave() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ready && s.cancel == nil && s.Autosave > 0 && s.path() != "" {
		ctx, cancel := context.WithCancel(context.Background())
		s.cancel, s.autosave = cancel, make(chan struct{})
		go s.autosaveLoop(ctx, s.path(), s.autosave)
	}
}

func (s *State) autosaveLoop(ctx context.Context, path string, done chan struct{}) {
	defer close(done)
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
// signal, once the worker has stopped serving and the state no longer
// changes. It stops the autosaves, then:
//   - in handover mode: Save(SaveHandover), then stores conns and says
//     HANDOVER=saved: the next worker restores the snapshot and gets conns.
//     Connections that could not be stored are named in the error; the
//     others go on.
//   - otherwise: Save(SaveShutdown); the caller closes conns.
//
// If the handover's Save fails (a full disk), or there is no snapshot path,
// nothing is stored: HandOver says HANDOVER=failed with the reason, so that
// the supervisor calls the upgrade off (kind save-failed) and lets this
// worker serve on; it resumes the autosaves and returns an error that
// wraps ErrSaveFailed and the cause. The worker must then serve conns again
// and accept again; Draining waits for the next drain signal.
//
// Outside handover mode, with no snapshot path nothing is saved. The worker
// keeps its copies of conns: close them, or just exit.
func (s *State) HandOver(conns []Conn) error {
	s.stopAutosave()
	path := s.path()
	if !handoverMode() {
		if path == "" {
			return nil
		}
		return s.Save(context.Background(), path, SaveShutdown)
	}
	if s.Live {
		err := s.Worker.handoverSaved()
		if path != "" {
			err = errors.Join(err, s.Save(context.Background(), path, SaveShutdown))
		}
		return err
	}
	var err error
	if path == "" {
		err = errors.New("no snapshot path (neither State.Path nor the supervisor's)")
	} else {
		err = s.Save(context.Background(), path, SaveHandover)
	}
	if err != nil {
		return s.saveFailed(err)
	}
	var storeErr error
	if len(conns) > 0 {
		storeErr = s.Worker.storeConns(conns)
	}
	return errors.Join(storeErr, s.Worker.handoverSaved())
}

// saveFailed says HANDOVER=failed, with err as the reason, and serves on:
// Draining re-armed, the autosaves resumed.
func (s *State) saveFailed(err error) error {
	failed := fmt.Errorf("%w: %w", ErrSaveFailed, err)
	notifyErr := s.Worker.handoverFailed(err.Error())
	s.startAutosave()
	if notifyErr != nil {
		return errors.Join(failed, fmt.Errorf("handoff: telling the supervisor: %w", notifyErr))
	}
	return failed
}
