package handoff

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/procswitch/supervisor/internal/contract"
	"golang.org/x/sys/unix"
)

// Reload is one request to reload in place (`supervisor ctl reload`): the
// supervisor sent SUPERVISOR_RELOAD_SIGNAL, and the worker has already told
// it RELOADING=1. The worker reloads what it can reload without a restart
// (its scripts, its configuration), then answers once with Done, or with
// Failed, in which case it serves on with what it ran before.
type Reload struct{ w *Worker }

// Done tells the supervisor the reload succeeded (READY=1), with the version
// of what the worker runs now (VERSION=, one line, at most 128 bytes; ""
// for none), which `supervisor ctl status` shows beside the binary's. A
// no-op returning nil when not supervised.
func (r Reload) Done(version string) error {
	msg := contract.MsgReady
	if version != "" {
		if err := checkLine("version", version, contract.MaxVersion); err != nil {
			return err
		}
		msg += "\n" + contract.MsgVersionKey + version
	}
	return r.w.notify(msg)
}

// Failed tells the supervisor the reload failed and why (RELOAD=failed and
// RELOAD_ERROR=, its first line, cut to 512 bytes); the worker serves on
// with what it ran before. A no-op returning nil when not supervised.
func (r Reload) Failed(reason error) error {
	why := "no reason given"
	if reason != nil {
		why, _, _ = strings.Cut(reason.Error(), "\n") // not a stack trace that may follow
		why = oneLine(why, contract.MaxReloadError)
	}
	return r.w.notify(contract.MsgReloadFailed + "\n" + contract.MsgReloadErrorKey + why)
}

// Reloads returns the channel of reload requests: one each time the
// supervisor sends its reload signal (SUPERVISOR_RELOAD_SIGNAL; none when it
// is not set: the channel never delivers). Answer each with Done or Failed
// within the supervisor's --reload-timeout. A signal that arrives while a
// request waits on the channel is answered by that request.
//
// New catches the reload signal, so that it never kills the worker; until
// Reloads is first called, each one is answered at once with RELOAD=failed:
// the worker does not reload.
func (w *Worker) Reloads() <-chan Reload {
	if w.reload == nil {
		return nil
	}
	w.reload.asked.Store(true)
	return w.reload.requests
}

// ReportVersion tells the supervisor the version of what the worker runs
// beyond its binary (VERSION=), at start say, before Ready. A no-op
// returning nil when not supervised.
func (w *Worker) ReportVersion(version string) error {
	if err := checkLine("version", version, contract.MaxVersion); err != nil {
		return err
	}
	return w.notify(contract.MsgVersionKey + version)
}

func checkLine(what, s string, max int) error {
	switch {
	case s == "" || strings.ContainsAny(s, "\n\x00"):
		return fmt.Errorf("handoff: %s must be one line, not empty, without NUL bytes", what)
	case len(s) > max:
		return fmt.Errorf("handoff: %s is longer than %d bytes", what, max)
	}
	return nil
}

// reloadWatch turns the reload signal into requests.
type reloadWatch struct {
	w        *Worker
	sigs     chan os.Signal
	requests chan Reload
	asked    atomic.Bool // Reloads was called
	done     chan struct{}
	stopOnce sync.Once
}

func watchReload(w *Worker, sig syscall.Signal) *reloadWatch {
	r := &reloadWatch{w: w, sigs: make(chan os.Signal, 1), requests: make(chan Reload, 1), done: make(chan struct{})}
	signal.Notify(r.sigs, sig)
	go r.loop()
	return r
}

func (r *reloadWatch) loop() {
	for {
		select {
		case <-r.sigs:
			r.arrived()
		case <-r.done:
			return
		}
	}
}

// arrived answers RELOADING=1 at once, as systemd's contract asks, and
// hands the request to the worker; or says it does not reload.
func (r *reloadWatch) arrived() {
	if !r.asked.Load() {
		r.w.notify(contract.MsgReloadFailed + "\n" + contract.MsgReloadErrorKey +
			"this worker does not reload in place (handoff: Reloads was never called)")
		return
	}
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	r.w.notify(contract.MsgReloading + "\n" + contract.MsgMonotonicUSecKey + strconv.FormatInt(ts.Nano()/1000, 10))
	select {
	case r.requests <- Reload{w: r.w}:
	default: // one waits already: it answers this one too
	}
}

func (r *reloadWatch) stop() {
	r.stopOnce.Do(func() {
		signal.Stop(r.sigs)
		close(r.done)
	})
}

// reloadSignalFromEnv parses SUPERVISOR_RELOAD_SIGNAL; 0 when unset.
func reloadSignalFromEnv() (syscall.Signal, error) {
	s := os.Getenv(contract.EnvReloadSignal)
	if s == "" {
		return 0, nil
	}
	sig, err := contract.ParseDrainSignal(s)
	if err != nil {
		return 0, fmt.Errorf("handoff: %s=%q: %w", contract.EnvReloadSignal, s, err)
	}
	return sig, nil
}
