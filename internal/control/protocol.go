// Package control is the supervisor's control socket: a unix stream socket,
// mode 0600, on which `supervisor ctl` asks for the status, an upgrade
// (optionally waiting for its result) or a stop.
//
// The protocol is one JSON request line and one JSON response line per
// connection:
//
//	{"cmd":"status"}                 -> {"ok":true,"status":{...}}
//	{"cmd":"upgrade","wait":true}    -> {"ok":true,"gen":4}   once generation 4 is ready and serving
//	                                 -> {"ok":false,"error":"upgrade to generation 4 failed: ...","kind":"exited-before-ready"}
//	{"cmd":"upgrade"}                -> {"ok":true}           at once: the upgrade was asked for
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

	"github.com/procswitch/supervisor/internal/supervisor"
)

// Request is what a client asks.
type Request struct {
	Cmd  string `json:"cmd"` // status, upgrade or stop
	Wait bool   `json:"wait,omitempty"`
}

// Response is the one answer to a request.
type Response struct {
	OK     bool               `json:"ok"`
	Error  string             `json:"error,omitempty"`
	Kind   string             `json:"kind,omitempty"` // of a failed upgrade: supervisor.Kind
	Gen    int                `json:"gen,omitempty"`  // the generation an upgrade started
	PID    int                `json:"pid,omitempty"`  // the supervisor's, in the answer to stop
	Status *supervisor.Status `json:"status,omitempty"`
}

// Commands a request may name.
const (
	CmdStatus  = "status"
	CmdUpgrade = "upgrade"
	CmdStop    = "stop"
)

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

// ErrNoPath means there is no control socket to use: neither a --control
// path nor systemd's RUNTIME_DIRECTORY.
var ErrNoPath = errors.New("no control socket: give --control PATH (the path the supervisor was started with), or run under systemd with RuntimeDirectory=")
