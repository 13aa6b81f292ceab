package main

import (
	"io"
	"log"
	"net"
	"slices"
	"sync"
	"syscall"
	"testing"

	"github.com/procswitch/supervisor/handoff"
)

// recordingStore is an fdStore that records what reaches the supervisor.
type recordingStore struct {
	mu  sync.Mutex
	ops []string // "+name" stored, "-name" removed
}

func (r *recordingStore) StoreFD(name string, c syscall.Conn) error {
	return r.StoreFDs([]handoff.Conn{{Name: name}})
}

func (r *recordingStore) StoreFDs(conns []handoff.Conn) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range conns {
		r.ops = append(r.ops, "+"+c.Name)
	}
	return nil
}

func (r *recordingStore) RemoveFD(name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, "-"+name)
	return nil
}

func (r *recordingStore) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ops)
}

// Whatever the interleaving of the sender with adds and removes, the
// supervisor never sees a removal before its store, and a connection
// removed while still queued never reaches it at all.
func TestConnStoreRemovalNeverOvertakesItsStore(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	for round := range 200 {
		rec := &recordingStore{}
		c := newConnStore(rec, log.New(io.Discard, "", 0))
		var wg sync.WaitGroup
		for i := range 20 {
			name := slotName(i)
			wg.Go(func() {
				c.add(name, a)
				if i%2 == 0 {
					c.remove(name)
				}
			})
		}
		wg.Wait()
		c.flush()
		ops := rec.got()
		for i := range 20 {
			name := slotName(i)
			stored, removed := slices.Index(ops, "+"+name), slices.Index(ops, "-"+name)
			switch {
			case i%2 == 1 && (stored < 0 || removed >= 0):
				t.Fatalf("round %d: %s kept: ops %v", round, name, ops)
			case i%2 == 0 && removed >= 0 && removed < stored:
				t.Fatalf("round %d: %s removed before it was stored: ops %v", round, name, ops)
			case i%2 == 0 && (stored >= 0) != (removed >= 0):
				t.Fatalf("round %d: %s removed, yet the supervisor keeps it: ops %v", round, name, ops)
			}
		}
	}
}
