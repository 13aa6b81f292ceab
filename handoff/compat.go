package handoff

import (
	"context"
	"syscall"

	"github.com/procswitch/supervisor/internal/contract"
)

// Until the supervisor's own test worker (internal/supervisor's
// handover_helper_test.go) moves to package handoff/handover, these keep
// the names it calls. Delete this file then.

// Deprecated: use contract.EnvGeneration (inside this module) or
// Worker.Generation.
const EnvGeneration = contract.EnvGeneration

// Deprecated: use handover.Await.
func (w *Worker) AwaitHandover(ctx context.Context) ([]Conn, error) { return w.awaitHandover(ctx) }

// Deprecated: use handover.SnapshotPath.
func (w *Worker) SnapshotPath() string { return snapshotPath() }

// Deprecated: use handover.StoreConn.
func (w *Worker) StoreConn(name string, c syscall.Conn) error { return w.storeConn(name, c) }

// Deprecated: use handover.StoreConns.
func (w *Worker) StoreConns(conns []Conn) error { return w.storeConns(conns) }

// Deprecated: use handover.Saved.
func (w *Worker) HandoverSaved() error { return w.handoverSaved() }
