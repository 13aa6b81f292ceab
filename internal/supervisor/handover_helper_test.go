package supervisor

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/procswitch/supervisor/handoff"
)

// runCounter is a stateful worker for handover mode: one shared counter, its
// state, saved to the snapshot; each "INC" line on any connection adds one
// and answers "<count> <pid>". With failGen set, the worker of that
// generation fails to restore.
func runCounter(failGen string) int {
	w, err := handoff.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, "counter:", err)
		return 2
	}
	ln, err := w.Listener("listen0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "counter:", err)
		return 2
	}
	conns, err := w.AwaitHandover(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "counter:", err)
		return 2
	}
	if os.Getenv(handoff.EnvGeneration) == failGen {
		fmt.Fprintln(os.Stderr, "counter: cannot restore (on purpose)")
		return 4
	}
	c := &counter{w: w}
	if b, err := os.ReadFile(w.SnapshotPath()); err == nil {
		c.n, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	for _, conn := range conns {
		c.serve(conn.Conn)
	}
	w.Ready()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.serve(conn)
		}
	}()
	<-w.Draining()
	ln.Close()
	c.handOver()
	return 0
}

type counter struct {
	w     *handoff.Worker
	mu    sync.Mutex
	n     int
	conns []net.Conn
	wg    sync.WaitGroup
	stop  bool
}

func (c *counter) serve(conn net.Conn) {
	c.mu.Lock()
	c.conns = append(c.conns, conn)
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		r := bufio.NewReader(conn)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			c.mu.Lock()
			if c.stop {
				c.mu.Unlock()
				return
			}
			c.n++
			fmt.Fprintf(conn, "%d %d\n", c.n, os.Getpid())
			c.mu.Unlock()
			_ = line
		}
	}()
}

// handOver stops serving, saves the counter and stores every connection.
func (c *counter) handOver() {
	c.mu.Lock()
	c.stop = true
	for _, conn := range c.conns {
		conn.SetReadDeadline(time.Unix(1, 0))
	}
	c.mu.Unlock()
	c.wg.Wait()
	tmp := c.w.SnapshotPath() + ".tmp"
	os.WriteFile(tmp, []byte(strconv.Itoa(c.n)), 0o600)
	os.Rename(tmp, c.w.SnapshotPath())
	for i, conn := range c.conns {
		if err := c.w.StoreConn("conn"+strconv.Itoa(i), conn.(*net.TCPConn)); err != nil {
			fmt.Fprintln(os.Stderr, "counter:", err)
		}
	}
	c.w.HandoverSaved()
}
