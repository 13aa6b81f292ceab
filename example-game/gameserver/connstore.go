package main

import (
	"log"
	"net"
	"slices"
	"sync"
	"syscall"

	"github.com/procswitch/supervisor/handoff"
)

// fdStore is the supervisor's live fd store, as a worker sees it
// (handoff.Worker).
type fdStore interface {
	StoreFD(name string, c syscall.Conn) error
	StoreFDs(conns []handoff.Conn) error
	RemoveFD(name string) error
}

// connStore stores a --live worker's accepted connections in the fd store
// off the accept path: a session starts at once and waits for its client's
// first line, while a goroutine of its own sends what accepts queued
// meanwhile, many connections to a datagram. One accepted alone is sent at
// once; a burst of accepts costs the supervisor a datagram per batch, not
// one per connection. A session runs no command and writes no reply
// before its connection is stored (liveIO.stored): a crash before that
// ends a connection on which nothing happened yet, as a crash between an
// accept and a store done in line does.
//
// A removal never overtakes its store: a connection still queued is just
// dropped from the queue, and one being sent is removed after the send.
// Before a handover the worker flushes the queue, so that the next worker
// gets every connection.
type connStore struct {
	fds fdStore
	log *log.Logger

	sendMu sync.Mutex // held while a batch is sent, and by a removal
	mu     sync.Mutex
	queued []handoff.Conn
	sent   chan struct{} // closed once the queued batch is sent
	wake   chan struct{}
}

func newConnStore(fds fdStore, logger *log.Logger) *connStore {
	c := &connStore{fds: fds, log: logger, wake: make(chan struct{}, 1)}
	go func() {
		for range c.wake {
			c.flush()
		}
	}()
	return c
}

// add queues conn, to be stored under name. The channel is closed once
// the datagram that carries it is sent (or failed: logged).
func (c *connStore) add(name string, conn net.Conn) <-chan struct{} {
	c.mu.Lock()
	c.queued = append(c.queued, handoff.Conn{Name: name, Conn: conn})
	if c.sent == nil {
		c.sent = make(chan struct{})
	}
	sent := c.sent
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default: // the sender is awake: it will see this one
	}
	return sent
}

// flush stores what is queued, now.
func (c *connStore) flush() {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	c.mu.Lock()
	batch, sent := c.queued, c.sent
	c.queued, c.sent = nil, nil
	c.mu.Unlock()
	if sent != nil {
		defer close(sent)
	}
	if len(batch) == 0 {
		return
	}
	if err := c.fds.StoreFDs(batch); err != nil {
		c.log.Printf("live: storing %d connections with the supervisor: %v: a crash of this worker would end them", len(batch), err)
	}
}

// remove takes the connection stored as name out of the fd store (or out
// of the queue): call it before closing the connection, so that the close
// reaches the client.
func (c *connStore) remove(name string) error {
	c.mu.Lock()
	i := slices.IndexFunc(c.queued, func(q handoff.Conn) bool { return q.Name == name })
	if i >= 0 {
		c.queued = slices.Delete(c.queued, i, i+1)
	}
	c.mu.Unlock()
	if i >= 0 {
		return nil // never sent
	}
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	return c.fds.RemoveFD(name)
}
