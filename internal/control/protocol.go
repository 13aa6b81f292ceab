// Package control is the supervisor's control socket: a unix stream socket,
// mode 0600, on which `supervisor ctl` asks for the status, an upgrade, a
// rollback or a reload in place (optionally waiting for its result), the upgrade history, the
// metrics, or a stop.
//
// The protocol is one JSON request line and one JSON response line per
// connection:
//
//	{"cmd":"status"}                 -> {"ok":true,"status":{...}}
//	{"cmd":"upgrade","wait":true}    -> {"ok":true,"gen":4}   once generation 4 is ready and serving
//	                                 -> {"ok":false,"error":"upgrade to generation 4 failed: ...","kind":"exited-before-ready"}
//	{"cmd":"upgrade"}                -> {"ok":true}           at once: the upgrade was asked for
//	{"cmd":"rollback","to":2}        -> as upgrade, "wait" too: back to generation 2's binary (no "to": the one before)
//	{"cmd":"reload","wait":true}     -> {"ok":true,"gen":3,"version":"scripts-42"}  once every worker of generation 3 reloaded
//	                                 -> {"ok":false,"error":"reload of generation 3 failed: ...","kind":"reload-failed"}
//	{"cmd":"reload"}                 -> {"ok":true}           at once: the workers were asked (kind refused: they were not)
//	{"cmd":"history","n":20}         -> {"ok":true,"history":[{...},...],"skipped":1}  the last 20 records, oldest first
//	                                    (no "n": DefaultHistory; -1: all); skipped: unreadable lines passed over
//	                                 -> {"ok":false,"error":"this supervisor keeps no history: ..."}  without --state-dir
//	{"cmd":"metrics"}                -> {"ok":true,"metrics":"# HELP supervisor_up ...\n..."}  Prometheus' text format
//	{"cmd":"stop"}                   -> {"ok":true}           the drain has begun
//	{"cmd":"stop","wait":true}       -> {"ok":true,"pid":N}, then end of file once every worker has drained
//
// Only root and the supervisor's own user may connect: the kernel's
// credentials of the peer (SO_PEERCRED) decide, and a refusal is logged. A
// request is at most MaxRequest bytes and must arrive within RequestTimeout;
// garbage gets an error response. None of this can block the supervisor's
// loop or a running upgrade: each connection is served on its own
// goroutine, and at most MaxConns at once.
package control

import (
	"errors"
	"os"
	"strings"

	"github.com/procswitch/supervisor/internal/history"
	"github.com/procswitch/supervisor/internal/supervisor"
)

// Request is what a client asks.
type Request struct {
	Cmd  string `json:"cmd"` // a Cmd* constant
	Wait bool   `json:"wait,omitempty"`
	To   int    `json:"to,omitempty"` // rollback: the generation whose binary to go back to; 0: the one before
	N    int    `json:"n,omitempty"`  // history: how many records; 0: DefaultHistory; below 0: every one
}

// Response is the one answer to a request.
type Response struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Kind  string `json:"kind,omitempty"` // of a failed upgrade or rollback: supervisor.Kind
	Gen   int    `json:"gen,omitempty"`  // the generation an upgrade or rollback started, or a reload reloaded
	// Version, of a reload: what the workers said they run now (VERSION=).
	Version string             `json:"version,omitempty"`
	PID     int                `json:"pid,omitempty"` // the supervisor's, in the answer to stop
	Status  *supervisor.Status `json:"status,omitempty"`

	// Metrics is the supervisor's own metrics in Prometheus' text format.
	Metrics string `json:"metrics,omitempty"`

	History []history.Record `json:"history,omitempty"` // oldest first
	Skipped int              `json:"skipped,omitempty"` // unreadable history lines passed over
}

// Commands a request may name.
const (
	CmdStatus   = "status"
	CmdUpgrade  = "upgrade"
	CmdRollback = "rollback"
	CmdReload   = "reload"
	CmdHistory  = "history"
	CmdMetrics  = "metrics"
	CmdStop     = "stop"
)

// DefaultHistory is how many records a history request without n gets.
const DefaultHistory = 20

// SocketName is the control socket's file name in the runtime directory.
const SocketName = "control"

// DefaultPath is where the control socket is when no path is given: in the
// first directory of systemd's RUNTIME_DIRECTORY. It is "" outside systemd.
func DefaultPath() string {
	dir, _, _ := strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":")
	if dir == "" {
		return ""
	}
	return dir + "/" + SocketName
}

var (
	// ErrNoPath means there is no control socket to use: neither a
	// --control path nor systemd's RUNTIME_DIRECTORY.
	ErrNoPath = errors.New("no control socket: give --control PATH (the path the supervisor was started with), or run under systemd with RuntimeDirectory=")
	// ErrNoHistory is the answer to a history request when the server was
	// given no history (WithHistory).
	ErrNoHistory = errors.New("this supervisor keeps no history: start it with --state-dir DIR or under systemd with StateDirectory=")
)
