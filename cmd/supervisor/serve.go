package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
	"github.com/procswitch/supervisor/internal/control"
	"github.com/procswitch/supervisor/internal/history"
	"github.com/procswitch/supervisor/internal/sdnotify"
	"github.com/procswitch/supervisor/internal/supervisor"
	"github.com/procswitch/supervisor/listener"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// serve opens the sockets (or takes them from the supervisor this one
// replaces), runs the workers and handles signals and control requests
// until a stop has drained them all, or until a successor supervisor has
// taken over and this one's workers have drained.
func serve(opts *options, log zerolog.Logger, signals chan os.Signal) error {
	defer signal.Stop(signals)

	// After a re-exec in place, until the state is taken over, a failure
	// executes the previous binary again (fallBack) rather than end the
	// process, and the workers with it.
	image, err := readReexecImage(opts, log)
	if err != nil {
		return err
	}
	sd, err := sdnotify.FromEnv()
	if err != nil {
		return image.fallBack(err, log)
	}
	defer sd.Close()
	hist, err := openHistory(opts.stateDir, log)
	if err != nil {
		return image.fallBack(err, log)
	}
	defer closeHistory(hist, log)
	upg, inherited, err := startTableflip(opts)
	if err != nil {
		return image.fallBack(err, log)
	}
	defer upg.Stop()
	if inherited == nil && image != nil {
		inherited = image.take()
	}
	sockets, err := openSockets(opts, inherited, log)
	if err != nil {
		inherited.close()
		return err
	}
	defer sockets.Close()
	runtimeDir, cleanup, err := makeRuntimeDir(opts.runtimeDir, inherited.previousRuntimeDir())
	if err != nil {
		inherited.close()
		return err
	}
	defer cleanup()

	obs, err := openObservability(opts, inherited, log)
	if err != nil {
		inherited.close()
		return err
	}
	defer obs.close()

	r := &reporter{sd: sd, log: log}
	succ := &successor{upg: upg, opts: opts, sockets: sockets, obs: obs, reporter: r, log: log}
	cfg := engineConfig(opts, sockets, runtimeDir, inherited, succ, r, hist, log)
	cfg.Record = obs.record(cfg.Record)
	re := &reexecer{path: selfPath, sockets: sockets, obs: obs, sd: sd, hist: hist, log: log, runtimeDir: runtimeDir}
	cfg.Reexec, cfg.Image = re.exec, inherited.image()
	sup, err := supervisor.New(cfg)
	if err != nil {
		inherited.close()
		return err
	}
	obs.sup = sup
	if !inherited.replacing() {
		obs.startServing() // a successor's waits for its first generation (whenReady)
	}
	if succ.ctl, err = openControl(opts, inherited, sup, hist, obs, log); err != nil {
		return err
	}
	if succ.ctl != nil {
		defer succ.ctl.Close()
	}
	if succ.ctl != nil {
		re.ctl = succ.ctl.Listener
	}
	logStarted(opts, inherited, log)
	go succ.whenReady(sup, inherited.replacing())
	go r.watchdog(inherited.parent(), sup)
	stop := &stopper{delay: opts.stopDelay, obs: obs, sup: sup, log: log}
	re.stopped = stop.requested
	up := &selfUpgrader{mode: opts.selfUpgrade, sup: sup, re: re, stop: stop, log: log}
	go handleSignals(signals, sup, up, stop, log)
	return wait(sup, opts, log)
}

// successorTimeout bounds a self-upgrade: the new supervisor's start (10 s)
// and its first generation's, each worker's within --ready-timeout; in
// handover mode also our worker's save (--drain-timeout), the connections'
// pass (--pass-timeout) and the new worker's restore (--ready-timeout from
// GO), since the new worker initialises before ours saves.
func successorTimeout(opts *options) time.Duration {
	d := opts.readyTimeout*time.Duration(opts.workers) + 10*time.Second
	if opts.mode == "handover" {
		d += opts.drainTimeout + opts.passTimeout + opts.readyTimeout
	}
	return d
}

// startTableflip makes the upgrader that a self-upgrade forks through, and
// reads what a predecessor passed on, if any.
func startTableflip(opts *options) (*tableflip.Upgrader, *inheritance, error) {
	upg, err := tableflip.New(tableflip.Options{UpgradeTimeout: successorTimeout(opts)})
	if err != nil {
		return nil, nil, fmt.Errorf("self-upgrade: %w", err)
	}
	// tableflip's mark for a child it started; it sets it again for each
	// successor. Workers must not see it: one using tableflip itself would
	// take its sockets for tableflip's pipes.
	os.Unsetenv(tableflipMark)
	inherited, err := takeInheritance(upg, opts.passTimeout)
	if err != nil {
		upg.Stop()
		return nil, nil, err
	}
	return upg, inherited, nil
}

// openSockets binds the --listen sockets, or takes them over from a
// predecessor or from systemd.
func openSockets(opts *options, inherited *inheritance, log zerolog.Logger) (*listener.Set, error) {
	var sockets *listener.Set
	var err error
	if inherited != nil {
		sockets, err = listener.Inherit(opts.listen, inherited.sockets)
	} else {
		sockets, err = listener.Open(opts.listen)
	}
	if err != nil {
		return nil, err
	}
	for _, s := range sockets.Sockets {
		log.Info().Str("name", s.Name).Str("network", s.Network).Str("addr", s.Addr.String()).
			Bool("inherited", s.Inherited).Msg("listening")
	}
	return sockets, nil
}

func engineConfig(opts *options, sockets *listener.Set, runtimeDir string, inherited *inheritance,
	succ *successor, r *reporter, hist *history.Log, log zerolog.Logger) supervisor.Config {
	return supervisor.Config{
		Path:          opts.command[0],
		Args:          opts.command[1:],
		Workers:       opts.workers,
		Ready:         opts.ready,
		ReadyTimeout:  opts.readyTimeout,
		DrainSignal:   opts.drainSignal,
		DrainTimeout:  opts.drainTimeout,
		ReloadSignal:  opts.reloadSignal,
		ReloadTimeout: opts.reloadTimeout,
		Watchdog:      opts.watchdog,
		RestartMin:    opts.restartMin,
		RestartMax:    opts.restartMax,
		Probation:     opts.probation,
		KeepVersions:  opts.keepVersions,
		StartAttempts: opts.startTries,
		PassTimeout:   opts.passTimeout,
		FDStoreMax:    opts.fdStoreMax,
		Standby:       opts.standby,
		Handover:      opts.mode == "handover",
		SnapshotPath:  opts.snapshot,
		Sockets:       sockets,
		RuntimeDir:    runtimeDir,
		Shim:          "/proc/self/exe",
		Stored:        inherited.storedConns(),
		Predecessor:   inherited.predecessor(opts.drainTimeout + opts.passTimeout),
		LastGen:       inherited.base(),
		Successor:     succ,
		Log:           log,
		Observe:       r.observe,
		Record:        recorder(hist, log),
	}
}

// openControl serves the control socket: the predecessor's, or a new one
// at --control; nil when there is none.
func openControl(opts *options, inherited *inheritance, sup *supervisor.Supervisor, hist *history.Log,
	obs *observability, log zerolog.Logger) (*control.Server, error) {
	with := []control.Option{control.WithHistory(hist), control.WithMetrics(obs.metrics.Text)}
	if ln := inherited.controlListener(); ln != nil {
		return control.NewServer(ln, opts.control, sup, log, with...), nil
	}
	if opts.control == "" {
		return nil, nil
	}
	ln, err := control.Listen(opts.control)
	if err != nil {
		return nil, err
	}
	return control.NewServer(ln, opts.control, sup, log, with...), nil
}

func logStarted(opts *options, inherited *inheritance, log zerolog.Logger) {
	ev := log.Info().Int("pid", os.Getpid()).Str("worker", opts.command[0]).Int("workers", opts.workers).
		Str("ready", opts.ready.String()).Str("mode", opts.mode).Str("control", opts.control).Str("self_upgrade", opts.selfUpgrade)
	if inherited.replacing() {
		ev = ev.Int("replacing_pid", inherited.parentPID)
	}
	if inherited.image() != nil {
		ev = ev.Bool("reexec", true)
	}
	ev.Msg("supervisor started")
}

// handleSignals turns signals into requests; the engine answers each
// (refusals included) in its log.
func handleSignals(signals <-chan os.Signal, sup *supervisor.Supervisor, up *selfUpgrader, stop *stopper, log zerolog.Logger) {
	for sig := range signals {
		switch sig {
		case syscall.SIGHUP:
			log.Info().Msg("SIGHUP: upgrading")
			go sup.Upgrade() // never blocks this goroutine: a stop signal after it must be seen at once
		case syscall.SIGUSR2:
			up.upgrade()
		default:
			stop.signal(sig)
		}
	}
}

// selfUpgrader is SIGUSR2: a re-exec in place (--self-upgrade exec, and
// always as PID 1, where the fork's exit would end the container), or a
// successor started through tableflip (fork).
type selfUpgrader struct {
	mode string
	sup  *supervisor.Supervisor
	re   *reexecer
	stop *stopper
	log  zerolog.Logger
	busy atomic.Bool // a re-exec's check or quiesce runs
}

func (u *selfUpgrader) upgrade() {
	refuse := func(reason string) {
		go u.sup.RefuseSelfUpgrade(supervisor.KindRefused, reason) // never blocks the signal goroutine
	}
	if u.stop.requested() {
		refuse("a stop was asked for: the supervisor drains, or will after --stop-delay")
		return
	}
	if u.mode == "fork" && os.Getpid() != 1 {
		u.log.Info().Msg("SIGUSR2: upgrading the supervisor itself (a successor process)")
		go u.sup.SelfUpgrade()
		return
	}
	if !u.busy.CompareAndSwap(false, true) {
		refuse("a re-exec in place is already under way")
		return
	}
	u.log.Info().Str("binary", u.re.path).Msg("SIGUSR2: upgrading the supervisor itself (re-exec in place): checking the new binary")
	go func() { // off the signal goroutine: a stop must not wait for the check
		defer u.busy.Store(false)
		bin, err := os.OpenFile(u.re.path, unix.O_PATH, 0) // checked, then executed: the same file, whatever is renamed over the path meanwhile
		if err == nil {
			defer bin.Close()
			release := u.sup.HoldOrphans() // the check is our child, not the engine's to reap
			err = checkNewBinary(u.re.path, procFD(bin))
			release()
		}
		if err != nil {
			u.sup.RefuseSelfUpgrade(supervisor.KindNotExecutable, err.Error())
			return
		}
		if u.stop.requested() {
			u.sup.RefuseSelfUpgrade(supervisor.KindRefused, "a stop was asked for during the check")
			return
		}
		u.re.binary = procFD(bin)
		<-u.sup.ReexecInPlace() // the engine logs a failure; on success this is another image
		u.re.binary = ""
	}()
}

// procFD is the path of f's fd in /proc/self: a process that opens or
// executes it gets that very file.
func procFD(f *os.File) string { return "/proc/self/fd/" + strconv.Itoa(int(f.Fd())) }

// wait runs the engine until it returns.
func wait(sup *supervisor.Supervisor, opts *options, log zerolog.Logger) error {
	if err := sup.Run(); err != nil {
		return err
	}
	if sup.Retired() {
		log.Info().Msg("stopped: the successor supervisor serves")
		return nil
	}
	removePIDFile(opts.pidFile)
	log.Info().Msg("stopped")
	return nil
}

// reporter tells systemd (when it started us) what the supervisor does.
type reporter struct {
	sd    *sdnotify.Notifier
	log   zerolog.Logger
	quiet atomic.Bool // set once a successor reports instead
}

func (r *reporter) observe(c supervisor.Change, st supervisor.Status) {
	if r.quiet.Load() {
		return
	}
	var lines []string
	switch c {
	case supervisor.UpgradeStarted:
		lines = append(sdnotify.Reloading(), sdnotify.Status(st.Summary()))
	case supervisor.UpgradeFinished:
		lines = []string{"READY=1", sdnotify.Status(st.Summary())}
	case supervisor.Stopping:
		lines = []string{"STOPPING=1", sdnotify.Status(st.Summary())}
	case supervisor.WorkersChanged:
		lines = []string{sdnotify.Status(st.Summary())}
	case supervisor.ReloadStarted:
		lines = append(sdnotify.Reloading(), sdnotify.Status(st.Summary()))
	case supervisor.ReloadFinished:
		lines = []string{"READY=1", sdnotify.Status(st.Summary())}
	case supervisor.SelfUpgradeStarted:
		lines = append(sdnotify.Reloading(), sdnotify.Status("upgrading the supervisor itself"))
	case supervisor.SelfUpgradeFinished:
		u := st.LastSelfUpgrade
		if u == nil || u.OK {
			return // the successor reports now
		}
		lines = []string{"MAINPID=" + strconv.Itoa(os.Getpid()), "READY=1",
			sdnotify.Status(st.Summary() + "; supervisor self-upgrade FAILED: " + u.Reason)}
	case supervisor.FirstReady:
		return // whenReady says READY=1, after the PID file is written
	}
	if err := r.sd.Send(lines...); err != nil {
		r.log.Warn().Err(err).Msg("cannot notify systemd")
	}
}

// watchdog pings systemd's watchdog while the loop answers: a supervisor
// whose loop hangs stops pinging, and systemd restarts it.
func (r *reporter) watchdog(parentPID int, sup *supervisor.Supervisor) {
	every := sdnotify.WatchdogInterval(parentPID)
	if every == 0 || !r.sd.Enabled() {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for range t.C {
		if _, ok := sup.Status(); !ok {
			return
		}
		if !r.quiet.Load() {
			r.sd.Send("WATCHDOG=1")
		}
	}
}

// writePIDFile writes our PID to path atomically: a temporary file in the
// same directory, renamed over it.
func writePIDFile(path string) error {
	if path == "" {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("--pid-file: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	if err2 := tmp.Close(); err == nil {
		err = err2
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("--pid-file: %w", err)
	}
	return nil
}

// removePIDFile removes the PID file if it still names us.
func removePIDFile(path string) {
	if path == "" {
		return
	}
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
		os.Remove(path)
	}
}

// makeRuntimeDir returns the directory for notify sockets: the one given,
// systemd's RuntimeDirectory=, or a private temporary one removed at exit;
// after a re-exec in place, the previous image's (previous), which holds
// the serving generation's notify socket, and which this image removes at
// exit if it was a temporary one.
func makeRuntimeDir(dir, previous string) (string, func(), error) {
	if dir == "" {
		// systemd joins several RuntimeDirectory= entries with ':'.
		dir, _, _ = strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":")
	}
	if previous != "" {
		if dir == "" {
			return previous, func() { os.RemoveAll(previous) }, nil
		}
		return previous, func() {}, nil
	}
	if dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", nil, fmt.Errorf("runtime directory: %w", err)
		}
		return dir, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "supervisor-")
	if err != nil {
		return "", nil, fmt.Errorf("runtime directory: %w (set --runtime-dir)", err)
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}
