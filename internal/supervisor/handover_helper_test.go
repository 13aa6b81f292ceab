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
	steps "github.com/procswitch/supervisor/handoff/handover"
)

// runCounter is a stateful worker for handover mode: one shared counter, its
// state, saved to the snapshot; each "INC" line on any connection adds one
// and answers "<count> <pid>", each "NAME" line answers "<name> <pid>": the
// name the connection was handed over under ("new" when it was accepted
// here). Options, comma-separated after "counter":
//
//	fail-gen=N    the worker of generation N fails to restore
//	store=batch   store the connections with one StoreConns, a name each
//	store=shared  store them with one StoreConns, all under one name, "conn"
//	              (systemd's FDSTORE=1: several fds, one FDNAME)
//
// By default each connection is stored on its own (StoreConn), under the
// name it came with, or conn<i> for the i-th accepted here.
func runCounter(opts string) int {
	var failGen, store string
	for _, o := range strings.Split(strings.TrimPrefix(opts, ","), ",") {
		if v, ok := strings.CutPrefix(o, "fail-gen="); ok {
			failGen = v
		}
		if v, ok := strings.CutPrefix(o, "store="); ok {
			store = v
		}
	}
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
	conns, err := steps.Await(context.Background(), w)
	if err != nil {
		fmt.Fprintln(os.Stderr, "counter:", err)
		return 2
	}
	if strconv.Itoa(w.Generation()) == failGen {
		fmt.Fprintln(os.Stderr, "counter: cannot restore (on purpose)")
		return 4
	}
	c := &counter{w: w, store: store}
	if b, err := os.ReadFile(steps.SnapshotPath()); err == nil {
		c.n, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	for _, conn := range conns {
		c.serve(conn.Conn, conn.Name)
	}
	w.Ready()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.serve(conn, "")
		}
	}()
	<-w.Draining()
	ln.Close()
	c.handOver()
	return 0
}

type counter struct {
	w     *handoff.Worker
	store string // the store option
	mu    sync.Mutex
	n     int
	conns []handoff.Conn // Name "" when accepted here
	wg    sync.WaitGroup
	stop  bool
}

func (c *counter) serve(conn net.Conn, name string) {
	c.mu.Lock()
	c.conns = append(c.conns, handoff.Conn{Name: name, Conn: conn})
	c.mu.Unlock()
	if name == "" {
		name = "new"
	}
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
			if strings.TrimSpace(line) == "NAME" {
				fmt.Fprintf(conn, "%s %d\n", name, os.Getpid())
			} else {
				c.n++
				fmt.Fprintf(conn, "%d %d\n", c.n, os.Getpid())
			}
			c.mu.Unlock()
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
	tmp := steps.SnapshotPath() + ".tmp"
	os.WriteFile(tmp, []byte(strconv.Itoa(c.n)), 0o600)
	os.Rename(tmp, steps.SnapshotPath())
	for i := range c.conns {
		switch {
		case c.store == "shared":
			c.conns[i].Name = "conn"
		case c.conns[i].Name == "":
			c.conns[i].Name = "conn" + strconv.Itoa(i)
		}
	}
	if c.store == "" {
		for _, conn := range c.conns {
			if err := steps.StoreConn(c.w, conn.Name, conn.Conn.(*net.TCPConn)); err != nil {
				fmt.Fprintln(os.Stderr, "counter:", err)
			}
		}
	} else if err := steps.StoreConns(c.w, c.conns); err != nil {
		fmt.Fprintln(os.Stderr, "counter:", err)
	}
	steps.Saved(c.w)
}
