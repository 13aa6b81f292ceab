package handoff

import (
	"context"
	"syscall"
	"time"

	"github.com/procswitch/supervisor/handoff/internal/link"
)

func init() {
	link.Steps = func(w any) any { return steps{w.(*Worker)} }
}

// steps are a Worker's handover steps as package handoff/handover exports
// them; the type is unexported, so they stay out of this package's API.
type steps struct{ w *Worker }

func (s steps) Await(ctx context.Context) ([]Conn, error)   { return s.w.awaitHandover(ctx) }
func (s steps) HandedOver() bool                            { return s.w.wasHandedOver() }
func (s steps) StoreConn(name string, c syscall.Conn) error { return s.w.storeConn(name, c) }
func (s steps) StoreConns(conns []Conn) error               { return s.w.storeConns(conns) }
func (s steps) Saved() error                                { return s.w.handoverSaved() }
func (s steps) Failed(reason string) error                  { return s.w.handoverFailed(reason) }
func (s steps) Barrier(timeout time.Duration) error         { return s.w.barrier(timeout) }
