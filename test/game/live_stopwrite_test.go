package game

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLiveStopWriteBound: a --live session whose client stopped reading in
// the middle of a reply larger than every socket buffer between them does
// not hold a handover up: the old worker lets the reply through for at
// most liveStopWrite (200ms), then saves and hands over; without that
// bound its write would never end, and the supervisor would kill it at the
// drain timeout. The client, reading again, gets the reply cut short and
// the notice that the command was applied, and the connection serves on,
// answered by the new worker.
func TestLiveStopWriteBound(t *testing.T) {
	size := sendBufferMax(t)*2 + 1<<20
	scripts := t.TempDir()
	shop := bytes.Replace(shipped(t, "shop_fixed.lua"),
		[]byte(`return "OK sold=" .. sold .. " goods=" .. table.concat(s, ",")`),
		[]byte(`return "OK big=" .. string.rep("x", `+strconv.Itoa(size)+`)`), 1)
	if bytes.Equal(shop, shipped(t, "shop_fixed.lua")) {
		t.Fatal("shop_fixed.lua's report changed: the test cannot make SHOP's reply big")
	}
	for name, src := range map[string][]byte{"game.lua": shipped(t, "game.lua"), "shop.lua": shop} {
		if err := os.WriteFile(filepath.Join(scripts, name), src, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The drain timeout is far above the bound, and below waitBound: a
	// worker whose write holds the handover up is killed, and the test says so.
	s := startSupervised(t, supervisedOpts{bin: bins.fixed, flags: []string{"--drain-timeout", "10s"},
		workerArgs: []string{"--live", "--scripts", scripts}})
	_, oldPID := s.ready(t)
	c := dialSmallReceive(t, s.addr)
	c.expect(t, "LOGIN stuck", "OK player=stuck coin=100 version="+fixedVersion)

	// SHOP runs and its reply begins: the worker is writing it, and the
	// rest cannot fit in the buffers while the client does not read.
	c.conn.SetDeadline(time.Now().Add(waitBound))
	if _, err := c.conn.Write([]byte("SHOP\n")); err != nil {
		t.Fatal(err)
	}
	head := make([]byte, len("OK big="))
	if _, err := io.ReadFull(c.r, head); err != nil || string(head) != "OK big=" {
		t.Fatalf("SHOP: the reply begins %q (%v), want %q", head, err, "OK big=")
	}

	s.install(t, bins.fixed)
	s.signal(syscall.SIGHUP)
	s.waitMsg(&s.at, "upgrade started", nil)
	saved := s.waitFor(&s.at, `"handover: snapshot saved" or "drain timeout: killing workers"`, func(l line) bool {
		return l.Msg() == "handover: snapshot saved" || l.Msg() == "drain timeout: killing workers"
	})
	if saved.Msg() != "handover: snapshot saved" {
		t.Fatalf("the old worker was killed at the drain timeout: the reply it was writing held the handover up")
	}
	// 200ms, and room for a slow machine; the drain timeout is 10s.
	if ms, _ := saved.Num("save_ms"); ms > 3000 {
		t.Errorf("the old worker saved %.0fms after it was told to: the reply it was writing held the handover up beyond the bound (200ms)", ms)
	}
	end := s.waitMsg(&s.at, "upgrade succeeded", nil)
	newPID := end.Ints("pids")[0]
	if newPID == oldPID {
		t.Fatalf("the upgrade succeeded with the old worker %d", oldPID)
	}

	rest, err := c.r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the rest of SHOP's reply: %v (got %d bytes): the line cut short was never ended, nor a notice sent", err, len(rest))
	}
	if got := len(head) + len(rest) - 1; got >= len("OK big=")+size {
		t.Errorf("SHOP's reply came whole (%d bytes): the bound did not cut it", got)
	}
	if strings.Trim(rest, "x\n") != "" {
		t.Errorf("SHOP's reply went on with %q, not its own bytes", strings.Trim(rest, "x"))
	}
	notice, err := c.r.ReadString('\n')
	if want := `NOTICE restarted: your last command "SHOP" was applied, its reply may be lost; send STATUS to resync` + "\n"; err != nil || notice != want {
		t.Errorf("after the reply cut short: %q (%v), want %q", notice, err, want)
	}
	c.expect(t, "STATUS", fmt.Sprintf("OK player=stuck coin=100 bag= version=%s pid=%d", fixedVersion, newPID))
}

// sendBufferMax is the most a TCP socket's send buffer grows to
// (tcp_wmem's maximum).
func sendBufferMax(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_wmem")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	n, err := strconv.Atoi(f[len(f)-1])
	if err != nil {
		t.Fatalf("tcp_wmem: %q", b)
	}
	return n
}

// dialSmallReceive is dial with a receive buffer of 64 KiB, set before the
// connection is made, so that it does not grow: a reply larger than twice
// the worker's send buffer cannot be written while the client does not
// read.
func dialSmallReceive(t *testing.T, addr string) *client {
	t.Helper()
	d := net.Dialer{Timeout: waitBound, Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		if cerr := rc.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10)
		}); cerr != nil {
			return cerr
		}
		return err
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{conn: c, r: bufio.NewReader(c)}
}
