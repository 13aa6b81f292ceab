package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/procswitch/supervisor/internal/contract"
	"github.com/procswitch/supervisor/internal/control"
	"github.com/procswitch/supervisor/internal/ready"
	"github.com/procswitch/supervisor/internal/supervisor"
	"github.com/procswitch/supervisor/listener"
	"golang.org/x/sys/unix"
)

const usage = `usage: supervisor [flags] -- WORKER [ARGS...]
       supervisor ctl [--control PATH] status [--json] | upgrade [--wait] [--timeout D] | reload [--wait] | stop

Runs WORKER on sockets the supervisor owns; SIGHUP upgrades it to a new
generation started from the same path, SIGUSR2 upgrades the supervisor's own
binary, SIGTERM or SIGINT drain and stop.

flags:
`

// options is the parsed command line.
type options struct {
	listen        []listener.Spec
	ready         ready.Probe
	readyTimeout  time.Duration
	drainSignal   syscall.Signal
	drainTimeout  time.Duration
	reloadSignal  syscall.Signal
	reloadTimeout time.Duration // 0: the ready timeout
	workers       int
	restartMin    time.Duration
	restartMax    time.Duration
	watchdog      time.Duration
	logFormat     string
	logLevel      string
	runtimeDir    string
	mode          string
	snapshot      string
	control       string // the control socket's path; "" for none
	pidFile       string
	probation     time.Duration
	keepVersions  int
	startTries    int
	stateDir      string // the upgrade history's directory; "" for none
	passTimeout   time.Duration
	fdStoreMax    int
	standby       bool
	metricsListen string        // host:port of /metrics, /healthz and /readyz; "" for none
	stopDelay     time.Duration // from the stop signal (/readyz failing) to the drain
	selfUpgrade   string        // SIGUSR2: exec (in place) or fork (a successor)
	command       []string      // the worker's path, resolved, then its arguments
}

// parseFlags reads the command line. Every error is one line that says
// what to do; flag.ErrHelp means --help was asked for.
func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{ready: ready.Probe{Mode: ready.Notify}, drainSignal: syscall.SIGTERM, reloadSignal: syscall.SIGHUP}
	fs := flag.NewFlagSet("supervisor", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Func("listen", "`[NAME=]NETWORK://ADDRESS` to listen on, repeatable: tcp://127.0.0.1:8080, tcp://[::1]:8080,\ntcp4://, tcp6://, udp://127.0.0.1:9000, unix:///run/app.sock; NAME is the worker's LISTEN_FDNAMES entry\n(default listen0, listen1, … in order). Under systemd socket activation, sockets systemd passed\nare taken over by name or address, and all of them when --listen is not given", func(s string) error {
		spec, err := listener.ParseSpec(s, len(o.listen))
		if err == nil {
			o.listen = append(o.listen, spec)
		}
		return err
	})
	fs.Func("ready", "how a worker is declared ready: `notify` (it sends READY=1), tcp (it accepts on every\nstream socket), http://HOST:PORT/PATH (answers 2xx), delay:DURATION (default notify)", func(s string) (err error) {
		o.ready, err = ready.Parse(s)
		return err
	})
	durationVar(fs, &o.readyTimeout, "ready-timeout", supervisor.DefaultReadyTimeout, "the `duration` a new worker may take to become ready before it is killed")
	fs.Func("drain-signal", "the `SIGNAL` that tells an old worker to drain (default SIGTERM)", func(s string) (err error) {
		o.drainSignal, err = parseDrainSignal(s)
		return err
	})
	durationVar(fs, &o.drainTimeout, "drain-timeout", supervisor.DefaultDrainTimeout, "the `duration` a draining worker may take before it is killed")
	fs.Func("reload-signal", "the `SIGNAL` that asks a worker to reload in place (`supervisor ctl reload`; default SIGHUP,\nas systemd's Type=notify-reload)", func(s string) (err error) {
		o.reloadSignal, err = parseReloadSignal(s)
		return err
	})
	durationVar(fs, &o.reloadTimeout, "reload-timeout", 0, "the `duration` a reload may take, signal to every worker's answer (default: --ready-timeout)")
	countVar(fs, &o.workers, "workers", 1, "the `number` of worker processes per generation, all on the same sockets")
	durationVar(fs, &o.restartMin, "restart-min", supervisor.DefaultRestartMin, "the `duration` to wait before restarting a worker that crashed soon after its start; doubles with each consecutive crash (a worker that served for --restart-max is restarted at once)")
	durationVar(fs, &o.restartMax, "restart-max", supervisor.DefaultRestartMax, "the restart delay's cap, a `duration`; a worker that has served this long since it was ready counts as healthy again, and its crash is restarted at once")
	durationVar(fs, &o.watchdog, "watchdog", 0, "a ready worker that sends no WATCHDOG=1 for this `duration` is hung and replaced (0: off)")
	fs.StringVar(&o.logFormat, "log-format", "", "`json` or console (default: console on a terminal, json otherwise)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.mode, "mode", "overlap", "`overlap` (stateless: old and new serve side by side) or handover (stateful: the old worker\nsaves a snapshot and hands its connections to the new one)")
	fs.StringVar(&o.snapshot, "snapshot", "", "handover mode: the snapshot file `PATH` (default: $STATE_DIRECTORY/snapshot)")
	fs.StringVar(&o.runtimeDir, "runtime-dir", "", "directory for the notify sockets (default: $RUNTIME_DIRECTORY, else a new temporary one)")
	fs.StringVar(&o.control, "control", control.DefaultPath(), "the control socket `PATH` for `supervisor ctl` (default: $RUNTIME_DIRECTORY/control; none outside systemd)")
	durationVar(fs, &o.probation, "probation", supervisor.DefaultProbation, "for this `duration` after an upgrade, a crash or a hang of the new generation rolls back by\nitself to the previous binary (0: off)")
	countVar(fs, &o.keepVersions, "keep-versions", supervisor.DefaultKeepVersions, "the `number` of generations' binaries held open for rollbacks, the current one included")
	countVar(fs, &o.startTries, "start-attempts", supervisor.DefaultStartTries, "the first generation is started this `number` of times at most; then the supervisor exits 1")
	fs.StringVar(&o.stateDir, "state-dir", "", "the `directory` of the upgrade history, history.jsonl (default: $STATE_DIRECTORY; none without)")
	durationVar(fs, &o.passTimeout, "pass-timeout", supervisor.DefaultPassTimeout, "the `duration` passing the stored connections to a new worker or supervisor may take")
	fs.BoolVar(&o.standby, "standby", false, "handover mode: keep a standby worker, started ahead and waiting, that takes over at once when the\nworker crashes (the worker must wait for GO with no time limit when SUPERVISOR_STANDBY=1)")
	countVar(fs, &o.fdStoreMax, "fd-store-max", supervisor.DefaultFDStoreMax, "the `number` of fds the live fd store holds for the workers at most (FDSTORE=1: a connection\nper player, a memfd of state); beyond it FDSTORE=1 is refused and logged. Lowered to fit RLIMIT_NOFILE")
	fs.StringVar(&o.metricsListen, "metrics-listen", "", "serve /metrics (Prometheus), /healthz and /readyz over HTTP on `HOST:PORT`, such as 127.0.0.1:9090\nor :9090 (none by default)")
	durationVar(fs, &o.stopDelay, "stop-delay", 0, "on SIGTERM or SIGINT, /readyz fails at once and the drain begins after this `duration`, so that a\nload balancer or Kubernetes removes the endpoint before connections are refused; a second signal\nstops at once")
	fs.StringVar(&o.selfUpgrade, "self-upgrade", "fork", "how SIGUSR2 upgrades the supervisor: `exec` re-executes the new binary in place (same PID, the\nworkers adopted, nothing restarted; always so as PID 1) or fork (a successor process starts its\nown workers, and this one exits)")
	fs.StringVar(&o.pidFile, "pid-file", "", "write the supervisor's PID to `PATH`, atomically; rewritten by a self-upgrade (SIGUSR2)")
	fs.Usage = func() {} // an error is one line; the usage text is for --help
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stderr, usage)
			fs.SetOutput(stderr)
			fs.PrintDefaults()
			return nil, err
		}
		return nil, fmt.Errorf("%w (see supervisor --help)", err)
	}
	return o, o.check(fs.Args())
}

func (o *options) check(command []string) error {
	switch {
	case len(command) == 0:
		return errors.New("no worker: give the program to run after the flags, as in: supervisor --listen tcp://127.0.0.1:8080 -- ./server")
	case o.workers < 1 || o.workers > 1024:
		return fmt.Errorf("--workers %d: want 1 to 1024", o.workers)
	case o.readyTimeout <= 0 || o.drainTimeout <= 0:
		return errors.New("--ready-timeout and --drain-timeout must be positive durations, such as 30s")
	case o.restartMin <= 0 || o.restartMax < o.restartMin:
		return fmt.Errorf("--restart-min %v and --restart-max %v: want 0 < min <= max", o.restartMin, o.restartMax)
	case o.watchdog != 0 && o.watchdog < time.Millisecond:
		return fmt.Errorf("--watchdog %v: want 0 (off) or at least 1ms, such as 10s", o.watchdog)
	case o.logFormat != "" && o.logFormat != "json" && o.logFormat != "console":
		return fmt.Errorf("--log-format %q: want json or console", o.logFormat)
	case o.mode != "overlap" && o.mode != "handover":
		return fmt.Errorf("--mode %q: want overlap or handover", o.mode)
	case o.selfUpgrade != "exec" && o.selfUpgrade != "fork":
		return fmt.Errorf("--self-upgrade %q: want exec or fork", o.selfUpgrade)
	case o.stopDelay < 0 || o.stopDelay > time.Hour:
		return fmt.Errorf("--stop-delay %v: want 0 (off) to 1h, such as 5s", o.stopDelay)
	case o.metricsListen != "" && !validHostPort(o.metricsListen):
		return fmt.Errorf("--metrics-listen %q: want HOST:PORT, such as 127.0.0.1:9090 or :9090", o.metricsListen)
	case o.probation < 0:
		return fmt.Errorf("--probation %v: want 0 (off) or a duration such as 60s", o.probation)
	case o.keepVersions < 1 || o.keepVersions > 64:
		return fmt.Errorf("--keep-versions %d: want 1 to 64 (1 keeps only the current binary: no rollback)", o.keepVersions)
	case o.startTries < 1:
		return fmt.Errorf("--start-attempts %d: want 1 or more", o.startTries)
	case o.reloadTimeout < 0:
		return fmt.Errorf("--reload-timeout %v: want a positive duration, such as 30s", o.reloadTimeout)
	case o.reloadSignal == o.drainSignal:
		return fmt.Errorf("--reload-signal %s is also the drain signal: a worker could not tell a reload from a drain", unix.SignalName(o.reloadSignal))
	case o.passTimeout <= 0:
		return errors.New("--pass-timeout must be a positive duration, such as 30s")
	case o.fdStoreMax < 1 || o.fdStoreMax > 1<<24:
		return fmt.Errorf("--fd-store-max %d: want 1 to %d, such as %d", o.fdStoreMax, 1<<24, supervisor.DefaultFDStoreMax)
	}
	if o.stateDir == "" {
		if dir := os.Getenv("STATE_DIRECTORY"); dir != "" {
			o.stateDir = strings.Split(dir, ":")[0]
		}
	}
	if err := o.checkHandover(); err != nil {
		return err
	}
	path, err := resolveWorker(command[0])
	if err != nil {
		return err
	}
	o.command = append([]string{path}, command[1:]...)
	return nil
}

// resolveWorker finds the worker on PATH when it has no slash, makes it
// absolute, and checks that it can be executed.
func resolveWorker(name string) (string, error) {
	path := name
	if !strings.Contains(name, "/") {
		p, err := exec.LookPath(name)
		if err != nil {
			return "", fmt.Errorf("worker %q: not found on PATH: give its path, such as ./%s", name, name)
		}
		path = p
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("worker %s: %w", name, err)
	}
	return abs, supervisor.CheckExecutable(abs)
}

// parseDrainSignal is contract.ParseDrainSignal with a hint of what to use.
func parseDrainSignal(s string) (syscall.Signal, error) {
	sig, err := contract.ParseDrainSignal(s)
	switch {
	case errors.Is(err, contract.ErrUncatchableSignal):
		return 0, fmt.Errorf("%w, so a worker could not drain: use SIGTERM, SIGQUIT or SIGINT", err)
	case err != nil:
		return 0, fmt.Errorf("%w: use a name such as SIGTERM, SIGQUIT or SIGINT", err)
	}
	return sig, nil
}

// parseReloadSignal is contract.ParseDrainSignal with a hint of what to use.
func parseReloadSignal(s string) (syscall.Signal, error) {
	sig, err := contract.ParseDrainSignal(s)
	switch {
	case errors.Is(err, contract.ErrUncatchableSignal):
		return 0, fmt.Errorf("%w, so a worker could not reload: use SIGHUP or SIGUSR1", err)
	case err != nil:
		return 0, fmt.Errorf("%w: use a name such as SIGHUP or SIGUSR1", err)
	}
	return sig, nil
}

// checkHandover fills in the snapshot path for handover mode.
func (o *options) checkHandover() error {
	if o.mode != "handover" {
		if o.snapshot != "" {
			return errors.New("--snapshot is for --mode handover")
		}
		if o.standby {
			return errors.New("--standby is for --mode handover: a standby takes over a crashed worker's state and connections")
		}
		return nil
	}
	if o.workers != 1 {
		return fmt.Errorf("--workers %d: handover mode runs exactly one worker, which owns the state", o.workers)
	}
	if o.snapshot == "" {
		dir := os.Getenv("STATE_DIRECTORY")
		if dir == "" {
			return errors.New("--mode handover needs --snapshot PATH (or systemd's StateDirectory=)")
		}
		o.snapshot = filepath.Join(strings.Split(dir, ":")[0], "snapshot")
	}
	abs, err := filepath.Abs(o.snapshot)
	if err != nil {
		return fmt.Errorf("--snapshot %s: %w", o.snapshot, err)
	}
	if fi, err := os.Stat(filepath.Dir(abs)); err != nil || !fi.IsDir() {
		return fmt.Errorf("--snapshot %s: directory %s does not exist: create it first", o.snapshot, filepath.Dir(abs))
	}
	o.snapshot = abs
	return nil
}

// validHostPort says whether s is a TCP HOST:PORT (the host may be empty:
// every address).
func validHostPort(s string) bool {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 0 && n <= 65535
}
