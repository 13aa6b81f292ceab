package handoff

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/procswitch/supervisor/internal/contract"
)

// notifyTimeout bounds one notification: a supervisor that stopped reading
// its socket must not hang the worker.
const notifyTimeout = 5 * time.Second

// notify sends one sd_notify datagram: newline-separated KEY=VALUE lines,
// such as "READY=1\nSTATUS=serving". With no notify socket (not supervised)
// it does nothing and returns nil. The supervisor believes a message only
// when the kernel says it came from the worker process itself, so call it
// from the worker, not from a process it started.
func (w *Worker) notify(msg string) error {
	if w.notifyAddr == "" {
		return nil
	}
	addr := &net.UnixAddr{Name: w.notifyAddr, Net: "unixgram"} // '@' means abstract
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return fmt.Errorf("handoff: notify: %w", err)
	}
	defer conn.Close()
	if err := conn.SetWriteDeadline(time.Now().Add(notifyTimeout)); err != nil {
		return fmt.Errorf("handoff: notify: %w", err)
	}
	if _, err := conn.Write([]byte(msg)); err != nil {
		return fmt.Errorf("handoff: notify: %w", err)
	}
	return nil
}

// Ready tells the supervisor the worker serves: the signal that lets the
// previous generation drain. Send it once the listeners are taken and the
// worker can answer. A no-op returning nil when not supervised.
func (w *Worker) Ready() error { return w.notify(contract.MsgReady) }

// Status sends a one-line human-readable status (STATUS=...). A no-op
// returning nil when not supervised.
func (w *Worker) Status(status string) error {
	if strings.ContainsAny(status, "\n\x00") {
		return errors.New("handoff: status must be one line without NUL bytes")
	}
	return w.notify(contract.MsgStatusKey + status)
}

// Stopping tells the supervisor the worker has begun to drain (STOPPING=1).
// A no-op returning nil when not supervised.
func (w *Worker) Stopping() error { return w.notify(contract.MsgStopping) }

// Watchdog sends a keep-alive ping (WATCHDOG=1). A no-op returning nil when
// not supervised.
func (w *Worker) Watchdog() error { return w.notify(contract.MsgWatchdog) }

// WatchdogInterval returns WATCHDOG_USEC: the supervisor considers the
// worker hung when no Watchdog ping arrives within it, so ping at least twice
// per interval. It is 0 when no watchdog is configured for this process
// (unset, or WATCHDOG_PID names another process).
func (w *Worker) WatchdogInterval() time.Duration { return w.watchdog }
