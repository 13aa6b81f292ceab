package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/cloudflare/tableflip"
	"github.com/procswitch/supervisor/internal/supervisor"
	"github.com/procswitch/supervisor/listener"
	"golang.org/x/sys/unix"
)

// envManifest carries the manifest to the successor, in the environment it
// inherits; the successor unsets it, so no worker sees it.
const envManifest = "SUPERVISOR_SUCCESSOR_MANIFEST"

// tableflipMark is the variable by which tableflip tells a process it
// started that it has a parent.
const tableflipMark = "TABLEFLIP_HAS_PARENT_7DIU3"

// manifest says what the passed files are.
type manifest struct {
	ParentPID int            `json:"parent_pid"`
	LastGen   int            `json:"last_gen"` // the successor numbers its generations on from here
	Sockets   []manifestSock `json:"sockets"`
	Control   bool           `json:"control"`
	Metrics   bool           `json:"metrics,omitempty"` // the --metrics-listen socket, tableflip file "metrics"
	Conns     int            `json:"conns"`             // stored connections on the "conns" channel
	// Deferred: the "conns" channel waits for the successor's first worker
	// to initialise; the successor asks on it for the handover (conns.go).
	Deferred bool `json:"deferred,omitempty"`
}

type manifestSock struct {
	Name     string `json:"name"`
	OwnsPath bool   `json:"owns_path"`
}

// inheritance is what a predecessor passed on; nil when there is none.
type inheritance struct {
	parentPID int
	lastGen   int
	sockets   []listener.Passed
	control   *net.UnixListener
	metrics   net.Listener
	conns     []supervisor.StoredConn
	deferred  *net.UnixConn // the channel on which to ask for the handover
	// reexec: this process re-executed itself (reexec.go): the engine's
	// state to take over; the rest is the same process's own
	reexec     *supervisor.Image
	runtimeDir string // of the image before: its notify sockets are there
}

// replacing says whether this supervisor replaces another process (a
// successor started through tableflip), not its own previous image.
func (in *inheritance) replacing() bool { return in != nil && in.reexec == nil }

// previousRuntimeDir is the runtime directory of the image before a
// re-exec, or "".
func (in *inheritance) previousRuntimeDir() string {
	if in == nil {
		return ""
	}
	return in.runtimeDir
}

// image is the engine's state from a re-exec, or nil.
func (in *inheritance) image() *supervisor.Image {
	if in == nil {
		return nil
	}
	return in.reexec
}

// takeInheritance reads what the supervisor we replace passed on, if any.
func takeInheritance(upg *tableflip.Upgrader, passTimeout time.Duration) (*inheritance, error) {
	if !upg.HasParent() {
		return nil, nil
	}
	raw := os.Getenv(envManifest)
	os.Unsetenv(envManifest)
	var m manifest
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return nil, fmt.Errorf("self-upgrade: the previous supervisor's manifest %s=%q: %v: is it the same program?", envManifest, raw, err)
	}
	in := &inheritance{parentPID: m.ParentPID, lastGen: m.LastGen}
	for i, s := range m.Sockets {
		f, err := upg.File("socket/" + strconv.Itoa(i))
		if err != nil || f == nil {
			in.close()
			return nil, fmt.Errorf("self-upgrade: socket %d (%s) missing from what the previous supervisor passed (%v)", i, s.Name, err)
		}
		in.sockets = append(in.sockets, listener.Passed{Name: s.Name, File: f, OwnsPath: s.OwnsPath})
	}
	if m.Control {
		f, err := upg.File("control")
		if err == nil && f != nil {
			ln, err := net.FileListener(f)
			f.Close()
			if ul, ok := ln.(*net.UnixListener); err == nil && ok {
				in.control = ul
			}
		}
	}
	if m.Metrics {
		f, err := upg.File("metrics")
		if err == nil && f != nil {
			ln, err := net.FileListener(f)
			f.Close()
			if err == nil {
				in.metrics = ln
			}
		}
	}
	if m.Deferred {
		uc, err := connsChannel(upg)
		if err != nil {
			in.close()
			return nil, fmt.Errorf("self-upgrade: %w", err)
		}
		in.deferred = uc
	} else if m.Conns > 0 {
		conns, err := receiveConns(upg, passTimeout)
		if err != nil {
			in.close()
			return nil, fmt.Errorf("self-upgrade: receiving the stored connections: %w", err)
		}
		in.conns = conns
	}
	return in, nil
}

// parent is the PID of the supervisor this one replaced; 0 for none.
func (in *inheritance) parent() int {
	if in == nil {
		return 0
	}
	return in.parentPID
}

func (in *inheritance) base() int {
	if in == nil {
		return 0
	}
	return in.lastGen
}

func (in *inheritance) storedConns() []supervisor.StoredConn {
	if in == nil {
		return nil
	}
	return in.conns
}

// predecessor is the engine's Config.Predecessor: nil unless the
// predecessor waits for our first worker before its own saves. timeout
// bounds its save and the passing of its connections.
func (in *inheritance) predecessor(timeout time.Duration) supervisor.HandOver {
	if in == nil || in.deferred == nil {
		return nil
	}
	return (&predecessorChannel{conn: in.deferred, timeout: timeout}).handOver
}

// metricsListener is the predecessor's --metrics-listen socket, or nil.
func (in *inheritance) metricsListener() net.Listener {
	if in == nil {
		return nil
	}
	return in.metrics
}

func (in *inheritance) controlListener() *net.UnixListener {
	if in == nil {
		return nil
	}
	return in.control
}

// close releases what was inherited, on a failed start.
func (in *inheritance) close() {
	if in == nil {
		return
	}
	for _, s := range in.sockets {
		s.File.Close()
	}
	if in.control != nil {
		in.control.Close()
	}
	if in.metrics != nil {
		in.metrics.Close()
	}
	for _, c := range in.conns {
		unix.Close(c.FD)
	}
	if in.deferred != nil {
		in.deferred.Close()
	}
}
