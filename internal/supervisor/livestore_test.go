package supervisor

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// liveClient is one connection to a runLive worker.
type liveClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialLive(t *testing.T, addr string) *liveClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitBound)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &liveClient{t: t, conn: c, r: bufio.NewReader(c)}
}

func (c *liveClient) send(line string) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(waitBound))
	if _, err := c.conn.Write([]byte(line + "\n")); err != nil {
		c.t.Fatalf("send %s: %v", line, err)
	}
}

// inc sends INC and returns the count and the PID that answered.
func (c *liveClient) inc() (count, pid int) {
	c.t.Helper()
	c.send("INC")
	c.conn.SetReadDeadline(time.Now().Add(waitBound))
	line, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("INC: %v (the connection did not survive)", err)
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		c.t.Fatalf("INC: answer %q", line)
	}
	count, _ = strconv.Atoi(f[0])
	pid, _ = strconv.Atoi(f[1])
	return count, pid
}

func (h *harness) fdStore() int {
	h.t.Helper()
	st, ok := h.sup.Status()
	if !ok {
		h.t.Fatal("no status: the supervisor stopped")
	}
	return st.FDStore
}

// TestLiveStoreSurvivesCrash: a worker keeps its state in a memfd and each
// connection in the live fd store. A kill -9 of the worker costs the
// clients a pause: the restarted worker gets the state and every
// connection back, and the count goes on. A connection the worker removed
// is closed for real (the client sees the end); one whose client hung up
// while no worker ran is dropped at the restart; an upgrade passes the
// store to the new worker with GO.
func TestLiveStoreSurvivesCrash(t *testing.T) {
	h := startSupervisor(t, "live", handoverMode)
	at := 0
	h.waitLog(&at, "generation ready", genIs(1))
	a, b, c := dialLive(t, h.addr), dialLive(t, h.addr), dialLive(t, h.addr)
	want := 1
	var pid1 int
	for _, cl := range []*liveClient{a, b, c} {
		n, pid := cl.inc()
		if n != want {
			t.Fatalf("count %d, want %d", n, want)
		}
		want++
		pid1 = pid
	}
	if got := h.fdStore(); got != 4 {
		t.Errorf("fd store holds %d, want 4 (the state and 3 connections)", got)
	}

	b.send("BYE") // removed from the store, then closed: the close reaches b
	b.conn.SetReadDeadline(time.Now().Add(waitBound))
	if _, err := b.r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("after BYE, read: %v, want EOF (the supervisor's copy kept the connection open?)", err)
	}
	h.waitLog(&at, "fds removed from the store", nil)
	if got := h.fdStore(); got != 3 {
		t.Errorf("fd store holds %d after BYE, want 3", got)
	}

	a.send("DIE")
	h.waitLog(&at, "worker exited", nil)
	c.conn.Close()     // hangs up while no worker runs
	n, pid2 := a.inc() // waits in the socket for the restarted worker
	if n != want || pid2 == pid1 {
		t.Fatalf("after kill -9: count %d from pid %d, want %d from a new worker (was %d)", n, pid2, want, pid1)
	}
	want++
	e := h.waitLog(new(int), "fd store: dropped fds whose peer hung up", nil)
	if e["dropped"] != float64(1) {
		t.Errorf("dropped %v at the restart, want 1 (c)", e["dropped"])
	}

	if r := h.upgrade(); r.Err != nil {
		t.Fatalf("handover: %v", r.Err)
	}
	n, pid3 := a.inc()
	if n != want || pid3 == pid2 {
		t.Fatalf("after the handover: count %d from pid %d, want %d from the new worker", n, pid3, want)
	}
	if got := h.fdStore(); got != 2 {
		t.Errorf("fd store holds %d after the handover, want 2 (the state and a)", got)
	}
	a.send("STATE")
	a.conn.SetReadDeadline(time.Now().Add(waitBound))
	if line, err := a.r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "start ") {
		t.Errorf("the worker started ahead got its state: %q, %v; want at start (the connections come with GO)", line, err)
	}
}

// TestLiveStoreBound: past --fd-store-max, FDSTORE=1 is refused with a
// logged reason and the fds closed; what was stored stays.
func TestLiveStoreBound(t *testing.T) {
	h := startSupervisor(t, "live", func(c *Config) { handoverMode(c); c.FDStoreMax = 2 })
	at := 0
	h.waitLog(&at, "generation ready", genIs(1))
	a, b := dialLive(t, h.addr), dialLive(t, h.addr)
	a.inc()
	b.inc()
	e := h.waitLog(&at, "fd store full", nil)
	if msg, _ := e["error"].(string); !strings.Contains(msg, "at most 2 (--fd-store-max)") {
		t.Errorf("the refusal says %q, want the bound named", msg)
	}
	if got := h.fdStore(); got != 2 {
		t.Errorf("fd store holds %d, want 2", got)
	}
}

// TestGoneSince: of the fds passed ahead, those the store no longer holds
// are named for the worker to close, unless another fd of the same name,
// passed ahead too, is still held.
func TestGoneSince(t *testing.T) {
	st := newFDStore(100)
	var fds []int
	for range 5 {
		p, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		fd, _ := unix.Dup(int(p.Fd()))
		p.Close()
		fds = append(fds, fd)
	}
	if err := st.add([]string{"a", "b", "c", "c", "region"}, fds, true); err != nil {
		t.Fatal(err)
	}
	prepassed := map[uint64]string{}
	st.list(passAhead(prepassed))
	st.remove("a")
	unix.Close(st.entries[2].fd)
	st.entries[2].fd = -1 // one of the two "c", as a drop of a hung-up peer leaves it
	st.n--
	gone := st.goneSince(prepassed)
	if len(gone) != 1 || gone[0] != "a" {
		t.Errorf("gone %v, want [a]: b and region are held, and c still has one fd", gone)
	}
	st.closeAll()
}
