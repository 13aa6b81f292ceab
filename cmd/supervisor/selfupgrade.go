package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync/atomic"

	"github.com/cloudflare/tableflip"
	"github.com/procswitch/supervisor/internal/control"
	"github.com/procswitch/supervisor/internal/sdnotify"
	"github.com/procswitch/supervisor/internal/supervisor"
	"github.com/procswitch/supervisor/listener"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// A self-upgrade (SIGUSR2), nginx-style, through tableflip: the supervisor
// starts its own binary again (the path it was started from, so a new build
// installed there) and passes it the listening sockets, the control socket
// and, in handover mode, a channel for the stored client connections
// (conns.go): the successor's first worker initialises while ours serves,
// then asks, and ours saves. The successor starts its own first generation
// on them; once that is ready it tells systemd it is the main process now
// (MAINPID=), rewrites the PID file, and tells this supervisor, which drains
// its workers and exits. If the successor fails (exits, or is not ready in
// time), this supervisor goes on serving.
//
// What is passed: tableflip files "socket/N" (the set's order) and
// "control", added once for the supervisor's life (tableflip keeps what it
// was given: adding them at every attempt would leak a duplicate per failed
// one); in handover mode, "conns", a seqpacket socket that carries the
// stored connections (conns.go); and the manifest, in the environment that
// the successor inherits (inherit.go).

// successor starts successor supervisors for the engine (it is its
// supervisor.Successor): the state of a self-upgrade is the engine's; this
// is the process work, through tableflip.
type successor struct {
	upg      *tableflip.Upgrader
	opts     *options
	sockets  *listener.Set
	ctl      *control.Server
	obs      *observability
	log      zerolog.Logger
	reporter *reporter

	passed bool // the sockets and control socket are with tableflip; Start only

	ready      atomic.Bool // tableflip was told that this supervisor is ready
	parentGone atomic.Bool // the supervisor this one replaced has exited (or there was none)
}

// whenReady reports readiness once the first generation is ready: to
// systemd (READY=1, and MAINPID= when this process replaces another), to
// the PID file, and to the predecessor, which then drains and exits.
func (u *successor) whenReady(sup *supervisor.Supervisor, replacing bool) {
	<-sup.Ready()
	st, _ := sup.Status()
	lines := []string{"READY=1", sdnotify.Status(st.Summary())}
	if replacing {
		lines = append([]string{"MAINPID=" + strconv.Itoa(os.Getpid())}, lines...)
		u.log.Info().Int("pid", os.Getpid()).Str("result", "ok").Msg("self-upgrade: this supervisor is ready and takes over")
	}
	if err := writePIDFile(u.opts.pidFile); err != nil {
		u.log.Error().Err(err).Msg("cannot write the PID file")
	}
	if err := u.reporter.sd.Send(lines...); err != nil {
		u.log.Warn().Err(err).Msg("cannot notify systemd")
	}
	u.log.Info().Int("pid", os.Getpid()).Str("pid_file", u.opts.pidFile).Bool("systemd", u.reporter.sd.Enabled()).Msg("supervisor ready")
	if err := u.upg.Ready(); err != nil {
		u.log.Warn().Err(err).Msg("self-upgrade: cannot tell the previous supervisor that this one is ready")
	}
	u.obs.startServing() // a successor's, now that it serves: the predecessor stops (Start)
	u.ready.Store(true)
	if replacing {
		if err := u.upg.WaitForParent(context.Background()); err != nil {
			u.log.Warn().Err(err).Msg("self-upgrade: the previous supervisor did not exit cleanly")
		}
	}
	u.parentGone.Store(true)
}

// Prepare says why no successor can start now.
func (u *successor) Prepare() error {
	switch {
	case !u.ready.Load():
		return errors.New("this supervisor's first generation is not ready yet: send SIGUSR2 again once it is")
	case !u.parentGone.Load():
		return errors.New("the supervisor this one replaced is still draining its workers: send SIGUSR2 again once it has exited")
	}
	return nil
}

// Start passes everything to a new supervisor process and returns once it
// serves (nil), or why it did not. It runs off the engine's loop.
func (u *successor) Start(lastGen int, handOver supervisor.HandOver) error {
	exe, _ := os.Executable()
	u.log.Info().Str("binary", os.Args[0]).Str("running", exe).Msg("self-upgrade: starting the new supervisor")
	ch, err := u.pass(lastGen, handOver)
	if err != nil {
		return err
	}
	// The successor inherits our environment: its WATCHDOG_PID check
	// accepts its parent.
	os.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	err = u.upg.Upgrade()
	os.Unsetenv(envManifest)
	if err != nil {
		if sendErr := ch.abort(); sendErr != nil { // closes what the dead successor did not take
			err = fmt.Errorf("%w (passing the stored connections: %v)", err, sendErr)
		}
		return err
	}
	if sendErr := ch.close(); sendErr != nil {
		u.log.Error().Err(sendErr).Msg("self-upgrade: passing the stored connections")
	}
	u.reporter.quiet.Store(true)
	u.sockets.HandedOn()
	if u.ctl != nil {
		u.ctl.HandOver()
		u.ctl.Close()
	}
	u.obs.close()
	return nil
}

// pass prepares what the successor needs: the files (once), the stored
// connections' channel, and the manifest in our environment. The returned
// channel is nil outside handover mode.
func (u *successor) pass(lastGen int, handOver supervisor.HandOver) (*connChannel, error) {
	if !u.passed {
		for i, s := range u.sockets.Sockets {
			if err := addFD(u.upg, "socket/"+strconv.Itoa(i), s.FD()); err != nil {
				return nil, fmt.Errorf("passing socket %s: %w", s.Name, err)
			}
		}
		if u.ctl != nil {
			f, err := u.ctl.Listener().File() // a duplicate; the listener keeps its mode
			if err == nil {
				err = u.upg.AddFile("control", f)
				f.Close()
			}
			if err != nil {
				return nil, fmt.Errorf("passing the control socket: %w", err)
			}
		}
		if ln, ok := u.obs.ln.(*net.TCPListener); ok {
			f, err := ln.File()
			if err == nil {
				err = u.upg.AddFile("metrics", f)
				f.Close()
			}
			if err != nil {
				return nil, fmt.Errorf("passing the --metrics-listen socket: %w", err)
			}
		}
		u.passed = true
	}
	_, hasMetrics := u.obs.ln.(*net.TCPListener)
	m := manifest{ParentPID: os.Getpid(), Control: u.ctl != nil, Metrics: hasMetrics, LastGen: lastGen}
	for _, s := range u.sockets.Sockets {
		m.Sockets = append(m.Sockets, manifestSock{Name: s.Name, OwnsPath: s.OwnsPath})
	}
	var ch *connChannel
	if handOver != nil {
		var err error
		if ch, err = offerConns(u.upg, handOver); err != nil {
			return nil, fmt.Errorf("passing the connections channel: %w", err)
		}
		m.Deferred = true
	}
	b, _ := json.Marshal(m) // plain data: cannot fail
	os.Setenv(envManifest, string(b))
	return ch, nil
}

// addFD passes a duplicate of fd under name.
func addFD(upg *tableflip.Upgrader, name string, fd int) error {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(dup), name)
	defer f.Close()
	return upg.AddFile(name, f)
}
