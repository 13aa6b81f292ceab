package sdnotify

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listen makes a notify socket like systemd's and points NOTIFY_SOCKET at it.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return c
}

func receive(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func TestSendReachesTheManager(t *testing.T) {
	for _, name := range []string{filepath.Join(t.TempDir(), "notify"), "@sdnotify-test-" + strconv.FormatInt(time.Now().UnixNano(), 36)} {
		c := listen(t, name)
		n, err := FromEnv()
		if err != nil {
			t.Fatal(err)
		}
		if !n.Enabled() {
			t.Fatal("not enabled with NOTIFY_SOCKET set")
		}
		if err := n.Send(append(Reloading(), Status("upgrading\nnow"))...); err != nil {
			t.Fatal(err)
		}
		got := strings.Split(receive(t, c), "\n")
		if len(got) != 3 || got[0] != "RELOADING=1" || !strings.HasPrefix(got[1], "MONOTONIC_USEC=") || got[2] != "STATUS=upgrading now" {
			t.Fatalf("%s: got %q", name, got)
		}
		if usec, err := strconv.ParseInt(strings.TrimPrefix(got[1], "MONOTONIC_USEC="), 10, 64); err != nil || usec <= 0 {
			t.Fatalf("MONOTONIC_USEC: %q", got[1])
		}
		n.Close()
	}
}

func TestWithoutManagerNothingIsSent(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n, err := FromEnv()
	if err != nil || n.Enabled() {
		t.Fatalf("FromEnv without NOTIFY_SOCKET: %v, enabled %v", err, n.Enabled())
	}
	if err := n.Send("READY=1"); err != nil {
		t.Fatal(err)
	}
}

func TestBadNotifySocketIsOneClearError(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "relative/path")
	if _, err := FromEnv(); err == nil || !strings.Contains(err.Error(), "NOTIFY_SOCKET") {
		t.Fatalf("got %v", err)
	}
}

func TestWatchdogInterval(t *testing.T) {
	me := strconv.Itoa(os.Getpid())
	for _, c := range []struct {
		usec, pid string
		parent    int
		want      time.Duration
	}{
		{"", "", 0, 0},
		{"garbage", "", 0, 0},
		{"2000000", "", 0, time.Second},
		{"2000000", me, 0, time.Second},
		{"2000000", "1", 0, 0},                 // meant for another process
		{"2000000", "4242", 4242, time.Second}, // our parent's: we replaced it
	} {
		t.Setenv("WATCHDOG_USEC", c.usec)
		t.Setenv("WATCHDOG_PID", c.pid)
		if got := WatchdogInterval(c.parent); got != c.want {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q parent %d: got %v, want %v", c.usec, c.pid, c.parent, got, c.want)
		}
	}
}
