package main

import (
	"bufio"
	"io"
	"log"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

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

// heldStore is an fdStore whose stores wait until released.
type heldStore struct {
	recordingStore
	release chan struct{}
}

func (h *heldStore) StoreFDs(conns []handoff.Conn) error {
	<-h.release
	return h.recordingStore.StoreFDs(conns)
}

// A new --live connection's first command runs only once the connection
// is in the fd store: killed before, the worker would leave a client whose
// command was applied, disconnected without a word.
func TestLiveCommandWaitsForTheStore(t *testing.T) {
	store := &heldStore{release: make(chan struct{})}
	srv := newLiveTestServer(t, store)
	w := srv.game.world
	waiting := make(chan struct{}, 1)
	testHookAwaitStore = func() { waiting <- struct{}{} }
	defer func() { testHookAwaitStore = nil }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepting := make(chan struct{})
	go func() { defer close(accepting); srv.accept(ln) }()
	defer func() { ln.Close(); <-accepting; srv.stop() }()

	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("LOGIN alice\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-waiting:
	case <-time.After(10 * time.Second):
		t.Fatal("the session never waited for its connection's store")
	}
	w.mu.Lock()
	_, ran := w.index["alice"]
	w.mu.Unlock()
	if ran {
		t.Fatal("LOGIN ran before the connection was stored")
	}
	close(store.release)
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "OK player=alice") {
		t.Fatalf("after the store: %q, %v", line, err)
	}
	// QUIT, and the end of the connection: the session has taken it out of
	// the store and freed its slot (before the region is closed).
	if _, err := c.Write([]byte("QUIT\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		t.Fatalf("after QUIT: %v", err)
	}
	if ops := store.got(); !slices.Equal(ops, []string{"+s0", "-s0"}) {
		t.Errorf("the supervisor got %v, want [+s0 -s0]", ops)
	}
}
