package main

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// client is one connection that sends STATUS and notes when the PID in the
// replies changes: its connection moved to a new worker. It sends either
// without pause, one command at a time (run: a closed loop), or at a pace
// of its own without waiting for the replies (runPaced: an open loop).
type client struct {
	conn net.Conn
	r    *bufio.Reader
	sent chan time.Time // paced: the send times of the commands not yet answered

	replies  atomic.Int64
	switches atomic.Int64 // PID changes seen
	notices  atomic.Int64 // NOTICE lines seen (a --live game's resumed session)

	mu     sync.Mutex
	last   time.Time // the last reply's time
	before time.Time // the one before
	n      int       // replies
	pid    int
	gaps   []float64 // per switch: the client's blackout in ms
	win    bool      // a window around an event is open (see openWindow)
	winGap float64   // the window's longest time between two replies, ms
	winLat float64   // paced: the window's longest time from a command to its reply, ms
	asked  time.Time // paced: the send time of the last command answered
	latSum float64   // paced: the replies' latencies, ms, summed

	err error
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
		line, err := c.readReply()
		now := time.Now()
		if err != nil {
			c.fail(err)
			return
		}
		pid, err := replyPID(line)
		if err != nil {
			c.fail(err)
			return
		}
		c.note(now, pid)
	}
}

// readReply reads the next line that is not a notice. A --live game tells
// a resumed session "NOTICE restarted: ..."; when it says that the last
// command was applied and its reply may be lost, the client sends STATUS
// again, as the protocol asks (if the reply was not lost after all, the
// client is one command ahead from then on).
func (c *client) readReply() ([]byte, error) {
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil || !bytes.HasPrefix(line, noticeMark) {
			return line, err
		}
		c.notices.Add(1)
		if bytes.Contains(line, []byte("was applied")) {
			if _, err := c.conn.Write(status); err != nil {
				return nil, err
			}
		}
	}
}

// runPaced sends STATUS every pace on average, each interval drawn
// uniformly between half and one and a half of pace from a random phase,
// without waiting for the replies: an open loop, in which a stall shows as
// the latency of the commands sent during it, and the load does not fall
// while replies are late. Each reply's latency is from its command's send.
func (c *client) runPaced(stop <-chan struct{}, pace, bound time.Duration) {
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		c.sendPaced(stop, pace, bound)
	}()
	defer func() { <-wrote }()
	for {
		c.conn.SetReadDeadline(time.Now().Add(bound))
		line, err := c.r.ReadSlice('\n')
		now := time.Now()
		if err != nil {
			select {
			case <-stop:
			default:
				c.fail(err)
			}
			return
		}
		pid, err := replyPID(line)
		if err != nil {
			c.fail(err)
			return
		}
		c.notePaced(now, <-c.sent, pid)
	}
}

// maxInFlight bounds a paced client's commands without a reply.
const maxInFlight = 256

func (c *client) sendPaced(stop <-chan struct{}, pace, bound time.Duration) {
	next := time.Now().Add(rand.N(pace))
	t := time.NewTimer(time.Until(next))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		now := time.Now()
		select {
		case c.sent <- now:
		default:
			c.fail(fmt.Errorf("%d commands without a reply", maxInFlight))
			return
		}
		c.conn.SetWriteDeadline(now.Add(bound))
		if _, err := c.conn.Write(status); err != nil {
			c.fail(err)
			return
		}
		next = next.Add(pace/2 + rand.N(pace))
		t.Reset(time.Until(next))
	}
}

// replyPID checks a STATUS reply and returns its pid.
func replyPID(line []byte) (int, error) {
	i := bytes.LastIndex(line, pidMark)
	pid, perr := strconv.Atoi(string(bytes.TrimSpace(line[max(i, 0)+len(pidMark):])))
	if !bytes.HasPrefix(line, []byte("OK player=")) || i < 0 || perr != nil {
		return 0, fmt.Errorf("bad STATUS reply %q", line)
	}
	return pid, nil
}

// notePaced notes a reply at now to the command sent at sent. At a switch
// the client's blackout is that reply's latency: the first from the new
// worker.
func (c *client) notePaced(now, sent time.Time, pid int) {
	lat := ms(now.Sub(sent))
	c.mu.Lock()
	if c.pid != 0 && pid != c.pid {
		c.gaps = append(c.gaps, lat)
		c.switches.Add(1)
	}
	if c.win {
		c.winLat = max(c.winLat, lat)
	}
	c.pid, c.asked = pid, sent
	c.latSum += lat
	c.n++
	c.before, c.last = c.last, now
	c.mu.Unlock()
	c.replies.Add(1)
}

// latency returns the sum of the replies' latencies, ms, and their count
// (paced).
func (c *client) latency() (float64, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.latSum, c.n
}

// answered says whether the client has had the reply to a command sent
// after t (paced).
func (c *client) answered(t time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.asked.After(t)
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
// A paced client's, its longest latency: from a command to its reply.
func (c *client) openWindow() {
	c.mu.Lock()
	c.win, c.winGap, c.winLat = true, 0, 0
	c.mu.Unlock()
}

// closeWindow stops the window and returns its longest time between two
// replies (closed loop) or from a command to its reply (paced), in ms.
func (c *client) closeWindow() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.win = false
	if c.sent != nil {
		return c.winLat
	}
	return c.winGap
}

// window opens every client's window, runs event, waits until every client
// is past it, and returns each client's longest time in the window (see
// closeWindow), in ms. Past it is, closed loop, after more replies since
// event returned; paced, the reply to a command sent after event returned,
// so that every command sent before has been answered and counted.
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
	end, mark := time.Now(), l.replies()
	if err := l.waitAll("answered after the event", bound, func(i int, c *client) bool {
		if l.pace > 0 {
			return c.answered(end)
		}
		return c.replies.Load() >= mark[i]+after
	}); err != nil {
		return nil, err
	}
	return gaps, nil
}

// load is the clients running.
type load struct {
	clients []*client
	pace    time.Duration // each client's mean interval between commands; 0: closed loop
	stop    chan struct{}
	wg      sync.WaitGroup
}

// startLoad starts the clients: closed loop with pace 0, else paced (see
// runPaced).
func startLoad(clients []*client, pace, bound time.Duration) *load {
	l := &load{clients: clients, pace: pace, stop: make(chan struct{})}
	for _, c := range clients {
		if pace > 0 {
			c.sent = make(chan time.Time, maxInFlight)
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			if pace > 0 {
				c.runPaced(l.stop, pace, bound)
				return
			}
			c.run(l.stop, bound)
		}()
	}
	return l
}

func (l *load) halt() {
	close(l.stop)
	for _, c := range l.clients {
		c.conn.SetDeadline(time.Now()) // a client waiting for a reply stops now
		if l.pace > 0 {
			c.conn.Close() // a paced reader may have set its deadline again
		}
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
