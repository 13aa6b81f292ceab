package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// client is one connection that sends STATUS without pause, one at a time,
// and notes when the PID in the replies changes: its connection moved to a
// new worker.
type client struct {
	conn net.Conn
	r    *bufio.Reader

	replies  atomic.Int64
	switches atomic.Int64 // PID changes seen

	mu     sync.Mutex
	last   time.Time // the last reply's time
	before time.Time // the one before
	n      int       // replies
	pid    int
	gaps   []float64 // per switch: the client's blackout in ms
	win    bool      // a window around an event is open (see openWindow)
	winGap float64   // the window's longest time between two replies, ms
	err    error
}

// dialAll connects n clients, logged in as players i % players, checking
// each LOGIN reply against the seed.
func dialAll(addr string, n, players int, seeded bool, bound time.Duration) ([]*client, error) {
	clients := make([]*client, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 128) // connects at once: the listen backlog is finite
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := dialClient(addr, i%players, seeded, bound)
			if err != nil {
				errs <- fmt.Errorf("client %d: %w", i, err)
				return
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		for _, c := range clients {
			if c != nil {
				c.conn.Close()
			}
		}
		return nil, err
	}
	return clients, nil
}

func dialClient(addr string, player int, seeded bool, bound time.Duration) (*client, error) {
	conn, err := net.DialTimeout("tcp", addr, bound)
	if err != nil {
		return nil, err
	}
	c := &client{conn: conn, r: bufio.NewReaderSize(conn, 512)}
	id, coin, _ := seedPlayer(player)
	if !seeded {
		coin = 100
	}
	conn.SetDeadline(time.Now().Add(bound))
	if _, err := fmt.Fprintf(conn, "LOGIN %s\n", id); err != nil {
		conn.Close()
		return nil, err
	}
	line, err := c.r.ReadSlice('\n')
	want := fmt.Sprintf("OK player=%s coin=%d version=", id, coin)
	if err != nil || !bytes.HasPrefix(line, []byte(want)) {
		conn.Close()
		return nil, fmt.Errorf("LOGIN %s: got %q (%v), want %s... (was the player seeded?)", id, line, err, want)
	}
	conn.SetDeadline(time.Time{})
	return c, nil
}

var (
	status  = []byte("STATUS\n")
	pidMark = []byte(" pid=")
)

// run sends STATUS until stop is closed or the connection fails; each read
// is bounded.
func (c *client) run(stop <-chan struct{}, bound time.Duration) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		c.conn.SetDeadline(time.Now().Add(bound))
		if _, err := c.conn.Write(status); err != nil {
			c.fail(err)
			return
		}
		line, err := c.r.ReadSlice('\n')
		now := time.Now()
		if err != nil {
			c.fail(err)
			return
		}
		i := bytes.LastIndex(line, pidMark)
		pid, perr := strconv.Atoi(string(bytes.TrimSpace(line[max(i, 0)+len(pidMark):])))
		if !bytes.HasPrefix(line, []byte("OK player=")) || i < 0 || perr != nil {
			c.fail(fmt.Errorf("bad STATUS reply %q", line))
			return
		}
		c.note(now, pid)
	}
}

func (c *client) note(now time.Time, pid int) {
	c.mu.Lock()
	if c.pid != 0 && pid != c.pid {
		// The silence before this reply, or before the previous one: a
		// reply the old worker computed but could not write before it
		// stopped is written by the new one, after the blackout.
		gap := now.Sub(c.last)
		if c.n > 1 {
			gap = max(gap, c.last.Sub(c.before))
		}
		c.gaps = append(c.gaps, ms(gap))
		c.switches.Add(1)
	}
	if c.win && c.n > 0 {
		c.winGap = max(c.winGap, ms(now.Sub(c.last)))
	}
	c.pid = pid
	c.n++
	c.before, c.last = c.last, now
	c.mu.Unlock()
	c.replies.Add(1)
}

func (c *client) fail(err error) {
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
}

func (c *client) failed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// gap returns the client's blackout at its switch number i (0-based).
func (c *client) gap(i int) (float64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i >= len(c.gaps) {
		return 0, false
	}
	return c.gaps[i], true
}

// openWindow starts noting the client's longest time between two replies.
// The first one counted ends at its next reply, so it spans the window's
// start.
func (c *client) openWindow() {
	c.mu.Lock()
	c.win, c.winGap = true, 0
	c.mu.Unlock()
}

// closeWindow stops the window and returns its longest time between two
// replies, in ms.
func (c *client) closeWindow() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.win = false
	return c.winGap
}

// window opens every client's window, runs event, waits until every client
// has had after more replies since event returned, and returns each
// client's longest time between two replies in the window, in ms.
func (l *load) window(event func() error, after int64, bound time.Duration) ([]float64, error) {
	for _, c := range l.clients {
		c.openWindow()
	}
	gaps := make([]float64, len(l.clients))
	defer func() {
		for i, c := range l.clients {
			gaps[i] = c.closeWindow()
		}
	}()
	if err := event(); err != nil {
		return nil, err
	}
	mark := l.replies()
	if err := l.waitAll("answered after the event", bound, func(i int, c *client) bool {
		return c.replies.Load() >= mark[i]+after
	}); err != nil {
		return nil, err
	}
	return gaps, nil
}

// load is the clients running.
type load struct {
	clients []*client
	stop    chan struct{}
	wg      sync.WaitGroup
}

func startLoad(clients []*client, bound time.Duration) *load {
	l := &load{clients: clients, stop: make(chan struct{})}
	for _, c := range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c.run(l.stop, bound)
		}()
	}
	return l
}

func (l *load) halt() {
	close(l.stop)
	for _, c := range l.clients {
		c.conn.SetDeadline(time.Now()) // a client waiting for a reply stops now
	}
	l.wg.Wait()
	for _, c := range l.clients {
		c.conn.Close()
	}
}

// firstErr returns the first client's failure.
func (l *load) firstErr() error {
	for i, c := range l.clients {
		if err := c.failed(); err != nil {
			return fmt.Errorf("client %d: %w", i, err)
		}
	}
	return nil
}

// waitAll waits until every client satisfies ok, polling, bounded; it fails
// as soon as a client has failed.
func (l *load) waitAll(what string, bound time.Duration, ok func(int, *client) bool) error {
	deadline := time.Now().Add(bound)
	for i := 0; i < len(l.clients); {
		if err := l.clients[i].failed(); err != nil {
			return fmt.Errorf("client %d: %w", i, err)
		}
		if ok(i, l.clients[i]) {
			i++
			continue
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("client %d: not %s within %v", i, what, bound)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return nil
}

// replies returns each client's count of replies.
func (l *load) replies() []int64 {
	out := make([]int64, len(l.clients))
	for i, c := range l.clients {
		out[i] = c.replies.Load()
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
