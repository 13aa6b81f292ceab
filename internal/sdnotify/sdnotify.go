// Package sdnotify is the supervisor's own side of systemd's notify
// protocol: it tells the service manager that started it (systemd, or a
// supervisor above it) when it is ready, reloading and stopping, what it
// runs (STATUS=), that it is alive (WATCHDOG=1), and, after upgrading its
// own binary, which process is now the main one (MAINPID=).
//
// Workers never talk to systemd directly: they get their generation's own
// notify socket from the supervisor, which is why the supervisor takes
// NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID out of its workers'
// environment.
package sdnotify

import (
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Notifier sends to the socket in NOTIFY_SOCKET. The zero Notifier, and one
// made without NOTIFY_SOCKET, sends nothing.
type Notifier struct {
	mu   sync.Mutex
	addr *net.UnixAddr
	conn *net.UnixConn
}

// FromEnv returns a notifier for the NOTIFY_SOCKET in the environment, or a
// disabled one when it is not set.
func FromEnv() (*Notifier, error) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return &Notifier{}, nil
	}
	if path[0] != '/' && path[0] != '@' {
		return nil, errors.New("sdnotify: NOTIFY_SOCKET=" + path + " is not a unix socket path: unset it, or start the supervisor from systemd")
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	return &Notifier{addr: &net.UnixAddr{Name: path, Net: "unixgram"}, conn: conn}, nil
}

// Enabled reports whether there is a service manager to tell.
func (n *Notifier) Enabled() bool { return n != nil && n.conn != nil }

// Send sends one message of NAME=value lines; with no manager it does nothing.
func (n *Notifier) Send(lines ...string) error {
	if !n.Enabled() {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	msg := strings.Join(lines, "\n")
	_, err := n.conn.WriteToUnix([]byte(msg), n.addr)
	return err
}

// Reloading is the start of a reload as systemd wants it told: RELOADING=1
// with the time it started on CLOCK_MONOTONIC.
func Reloading() []string {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	usec := ts.Sec*1_000_000 + ts.Nsec/1000
	return []string{"RELOADING=1", "MONOTONIC_USEC=" + strconv.FormatInt(usec, 10)}
}

// Status is a STATUS= line; newlines would end it early, so they go.
func Status(s string) string {
	return "STATUS=" + strings.ReplaceAll(s, "\n", " ")
}

// Close releases the notifier's socket.
func (n *Notifier) Close() error {
	if !n.Enabled() {
		return nil
	}
	return n.conn.Close()
}

// WatchdogInterval is how often to send WATCHDOG=1: half the WATCHDOG_USEC
// systemd set, as sd_watchdog_enabled advises; 0 when the watchdog is off or
// meant for another process. A supervisor that replaced its parent (a
// self-upgrade) accepts the parent's WATCHDOG_PID: systemd follows MAINPID.
func WatchdogInterval(parentPID int) time.Duration {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0
	}
	if p := os.Getenv("WATCHDOG_PID"); p != "" {
		pid, err := strconv.Atoi(p)
		if err != nil || (pid != os.Getpid() && (parentPID == 0 || pid != parentPID)) {
			return 0
		}
	}
	return time.Duration(usec) * time.Microsecond / 2
}
