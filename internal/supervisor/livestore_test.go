package supervisor

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"slices"
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
	// A reply may come before the supervisor has read the store's datagram.
	h.waitLog(new(int), "fds stored in the live store", func(e map[string]any) bool { return e["stored"] == float64(4) })
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

// ask sends a command and returns the answer's first field and the PID
// that answered.
func (c *liveClient) ask(cmd string) (answer string, pid int) {
	c.t.Helper()
	c.send(cmd)
	c.conn.SetReadDeadline(time.Now().Add(waitBound))
	line, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("%s: %v", cmd, err)
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		c.t.Fatalf("%s: answer %q", cmd, line)
	}
	pid, _ = strconv.Atoi(f[1])
	return f[0], pid
}

// serverSocket names the worker's end of the client's connection as
// /proc/PID/fd shows it ("socket:[inode]"), found in /proc/net/tcp by its
// two ports.
func serverSocket(t *testing.T, client net.Conn) string {
	t.Helper()
	local, remote := client.LocalAddr().(*net.TCPAddr), client.RemoteAddr().(*net.TCPAddr)
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	port := func(addr string) int {
		_, hex, _ := strings.Cut(addr, ":")
		n, _ := strconv.ParseInt(hex, 16, 32)
		return int(n)
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 9 && port(f[1]) == remote.Port && port(f[2]) == local.Port {
			return "socket:[" + f[9] + "]"
		}
	}
	t.Fatalf("no socket from port %d to port %d in /proc/net/tcp", remote.Port, local.Port)
	return ""
}

// holdsFD reports whether process pid has an fd open on target, a link
// such as "socket:[123]".
func holdsFD(t *testing.T, pid int, target string) bool {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("process %d: %v", pid, err)
	}
	for _, e := range ents {
		if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && l == target {
			return true
		}
	}
	return false
}

// openGate lets a live-gate worker go on: it opens the FIFO for writing,
// which waits for the worker to open it for reading, and closes it, which
// the worker reads as EOF.
func openGate(t *testing.T, path string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err == nil {
			err = f.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(waitBound):
		if r, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0); err == nil {
			r.Close() // releases the goroutine's open
		}
		t.Fatalf("the worker started ahead did not open %s within %v", path, waitBound)
	}
}

func fieldIs(key, value string) func(map[string]any) bool {
	return func(e map[string]any) bool { return e[key] == value }
}

// TestLiveStoreGoneBeforeGo: a worker started ahead of a handover gets
// every stored connection at start, x among them. x's client quits before
// the old worker saves: the old worker removes x from the store
// (FDSTOREREMOVE=1) and closes it. GO names x GONE: the new worker does
// not resume it and closes its copy, so that x's client sees the end, as
// it would have without the handover.
func TestLiveStoreGoneBeforeGo(t *testing.T) {
	h := startSupervisor(t, "live", handoverMode)
	at := 0
	h.waitLog(&at, "generation ready", genIs(1))
	a, x := dialLive(t, h.addr), dialLive(t, h.addr)
	a.inc()
	x.inc()
	aName, _ := a.ask("NAME")
	xName, _ := x.ask("NAME")
	for _, name := range []string{aName, xName} { // stored before served, but the status may come first
		from := at
		h.waitLog(&from, "fds stored in the live store", fieldIs("names", name))
	}
	if got := h.fdStore(); got != 3 {
		t.Fatalf("fd store holds %d, want 3 (the state, a and x)", got)
	}

	// The new worker starts with the whole store and waits on the gate
	// before it says WAITING: the old worker serves meanwhile.
	gate := h.mode + ".gate"
	if err := unix.Mkfifo(gate, 0o600); err != nil {
		t.Fatal(err)
	}
	h.setMode("live-gate")
	result := h.sup.Upgrade()
	pid2 := int(h.waitLog(&at, "worker started", genIs(2))["pid"].(float64))
	xSock := serverSocket(t, x.conn)
	if !holdsFD(t, pid2, xSock) {
		t.Fatalf("the worker started ahead (pid %d) does not hold x (%s): it was not passed at start", pid2, xSock)
	}

	x.send("BYE") // the old worker removes x from the store, and closes it
	h.waitLog(&at, "fds removed from the store", fieldIs("name", xName))
	if got := h.fdStore(); got != 2 {
		t.Errorf("fd store holds %d after BYE, want 2", got)
	}
	if !holdsFD(t, pid2, xSock) {
		t.Fatalf("the worker started ahead (pid %d) no longer holds x before GO: nothing left to test", pid2)
	}

	openGate(t, gate)
	select {
	case r := <-result:
		if r.Err != nil {
			t.Fatalf("handover: %v", r.Err)
		}
	case <-time.After(waitBound):
		t.Fatalf("the handover gave no result within %v", waitBound)
	}
	resumed, pid := a.ask("RESUMED")
	if pid != pid2 {
		t.Fatalf("a answered by pid %d after the handover, want the new worker %d", pid, pid2)
	}
	if names := strings.Split(resumed, ","); len(names) != 1 || names[0] != aName {
		t.Errorf("the new worker resumed %v, want only a (%s): x (%s) was removed before GO", names, aName, xName)
	}
	if holdsFD(t, pid2, xSock) {
		t.Errorf("the new worker (pid %d) still holds x (%s), which GO named GONE", pid2, xSock)
	}
	x.conn.SetReadDeadline(time.Now().Add(waitBound))
	if _, err := x.r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("x's client read %v, want EOF: a copy of x is still open", err)
	}
	if got := h.fdStore(); got != 2 {
		t.Errorf("fd store holds %d after the handover, want 2 (the state and a)", got)
	}
}

// TestLiveStoreNoPoll: before a crash restart the supervisor drops the
// stored connections whose client hung up, except those stored with
// FDPOLL=0, as systemd does: the restarted worker gets n, stored with
// FDPOLL=0, though its client hung up, and not p, stored without it.
func TestLiveStoreNoPoll(t *testing.T) {
	h := startSupervisor(t, "live", handoverMode)
	at := 0
	h.waitLog(&at, "generation ready", genIs(1))
	a, n, p := dialLive(t, h.addr), dialLive(t, h.addr), dialLive(t, h.addr)
	_, pid1 := a.inc()
	n.inc()
	p.inc()
	aName, _ := a.ask("NAME")
	nName, _ := n.ask("NAME")
	pName, _ := p.ask("NAME")
	n.ask("NOPOLL")
	h.waitLog(&at, "fds removed from the store", fieldIs("name", nName))
	h.waitLog(&at, "fds stored in the live store", fieldIs("names", nName))
	if got := h.fdStore(); got != 4 {
		t.Fatalf("fd store holds %d, want 4 (the state, a, n and p)", got)
	}

	// Both clients hang up; the worker reads EOF on each and says so: the
	// supervisor's copy, the same socket, reports the hang-up by then.
	n.conn.Close()
	p.conn.Close()
	from := at
	h.waitLog(&from, "worker status", fieldIs("status", "hung up "+nName))
	from = at
	h.waitLog(&from, "worker status", fieldIs("status", "hung up "+pName))

	a.send("DIE")
	h.waitLog(&at, "worker exited", nil) // an INC sent before might be read, lost, by the dying worker
	count, pid2 := a.inc()               // waits in the socket for the restarted worker
	if pid2 == pid1 {
		t.Fatalf("after kill -9, pid %d answered: want a new worker", pid2)
	}
	if count != 4 {
		t.Errorf("after kill -9: count %d, want 4 (the state kept)", count)
	}
	e := h.waitLog(&at, "fd store: dropped fds whose peer hung up", nil)
	if e["dropped"] != float64(1) || e["names"] != pName {
		t.Errorf("dropped %v (%v) at the restart, want 1 (p, %s): n was stored with FDPOLL=0", e["dropped"], e["names"], pName)
	}
	if got := h.fdStore(); got != 3 {
		t.Errorf("fd store holds %d after the restart, want 3 (the state, a and n)", got)
	}
	resumed, _ := a.ask("RESUMED")
	names := strings.Split(resumed, ",")
	slices.Sort(names)
	want := []string{aName, nName}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("the restarted worker resumed %v, want %v (a and n, not p %s)", names, want, pName)
	}
}
