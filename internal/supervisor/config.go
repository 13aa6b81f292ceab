package supervisor

import (
	"errors"
	"syscall"
	"time"

	"github.com/procswitch/supervisor/internal/history"
	"github.com/procswitch/supervisor/internal/ready"
	"github.com/procswitch/supervisor/listener"
	"github.com/rs/zerolog"
)

// Defaults for the Config fields whose zero value means "use the default".
const (
	DefaultReadyTimeout = 30 * time.Second
	DefaultDrainTimeout = 30 * time.Second
	DefaultRestartMin   = 100 * time.Millisecond
	DefaultRestartMax   = 30 * time.Second
	DefaultKeepVersions = 3
	// DefaultProbation: a bad build usually fails on its first real
	// requests, within seconds of taking traffic; a minute also covers
	// start-up work that runs late (a first autosave, caches that fill, a
	// periodic job), while the previous binary and, in handover mode, the
	// copies of the connections are held no longer than that.
	DefaultProbation   = time.Minute
	DefaultStartTries  = 5
	DefaultPassTimeout = 30 * time.Second
	// DefaultFDStoreMax bounds the live fd store (fdstore.go): a game
	// server stores one fd per connected player, and one process holds a
	// few thousand players (10k in the benchmarks); 16384 leaves room for
	// that and its state, while staying far below the 524288 fds systemd
	// allows a service and the 65536 of many containers, beside the
	// listeners and the handover's duplicates.
	DefaultFDStoreMax = 16384
)

// Config is what the supervisor runs and how.
type Config struct {
	Path string   // the worker executable, read again at every upgrade
	Args []string // the worker's arguments, after the path
	Env  []string // the environment workers start from (ours is used when nil)

	Workers      int           // worker processes per generation; 0 means 1
	Ready        ready.Probe   // how a worker is declared ready
	ReadyTimeout time.Duration // start to ready, per worker; 0 means DefaultReadyTimeout
	DrainSignal  syscall.Signal
	DrainTimeout time.Duration // drain signal to kill; 0 means DefaultDrainTimeout
	Watchdog     time.Duration // a ready worker silent this long is hung; 0 turns it off
	RestartMin   time.Duration // first restart delay after a crash; 0 means DefaultRestartMin
	RestartMax   time.Duration // restart delay cap, and the uptime after which a worker counts as healthy again

	// ReloadSignal asks a worker to reload in place (Reload); 0 means
	// SIGHUP, as systemd's Type=notify-reload. ReloadTimeout bounds a
	// reload, signal to the last worker's answer; 0 means ReadyTimeout.
	ReloadSignal  syscall.Signal
	ReloadTimeout time.Duration

	// Probation is how long after an upgrade a crash or a hang of the new
	// generation rolls it back by itself to the binary that served before
	// (probation.go); 0 turns it off.
	Probation    time.Duration
	KeepVersions int // binaries of the last generations held for rollbacks; 0 means DefaultKeepVersions
	// StartAttempts bounds how often the first generation is started before
	// Run gives up with an error, as a failed start; 0 means DefaultStartTries.
	StartAttempts int
	// PassTimeout bounds passing the stored connections to the new worker
	// in a handover; 0 means DefaultPassTimeout.
	PassTimeout time.Duration
	// FDStoreMax bounds the live fd store (fdstore.go); 0 means
	// DefaultFDStoreMax. It is lowered to fit RLIMIT_NOFILE's hard limit.
	FDStoreMax int
	// Standby keeps, in handover mode, a standby worker per slot of the
	// serving generation (standby.go): started ahead as for a handover and
	// kept waiting, it takes over at once when the slot's worker crashes.
	Standby bool

	// Reexec, when set, re-executes the supervisor in place on
	// ReexecInPlace (reexec.go); Image, when set, is the state a previous
	// image passed on: New adopts its workers instead of starting any.
	Reexec Reexec
	Image  *Image

	// Record, when set, is given every entry of the upgrade history
	// (package history). It runs on the supervisor's loop: it must not block.
	Record func(history.Record)

	// Handover mode: on upgrade the old worker saves its state to
	// SnapshotPath and hands its connections over (see handover.go).
	Handover     bool
	SnapshotPath string
	Stored       []StoredConn // connections a predecessor supervisor passed on, for the first generation
	LastGen      int          // the predecessor's last generation number: ours go on from it
	// Predecessor, in handover mode, is the supervisor this one replaces
	// (SIGUSR2), still serving: the first generation starts ahead of a
	// handover, and once its worker is initialised (WAITING) Predecessor
	// has the predecessor's worker save and returns its connections
	// (predecessor.go).
	Predecessor HandOver

	Sockets    *listener.Set
	RuntimeDir string // where the notify sockets live; must exist and be private to us
	Shim       string // the supervisor's own executable, run in shim mode to exec workers

	// Successor starts a successor supervisor on SIGUSR2 (SelfUpgrade);
	// nil refuses self-upgrades.
	Successor Successor

	Log zerolog.Logger

	// Observe, when set, is told of every change worth reporting (to
	// systemd, say), with the status after it. It runs on the supervisor's
	// loop: it must return quickly.
	Observe func(Change, Status)

	processes processes // tests: fake processes; nil means the real ones
}

// Successor starts a new supervisor process that takes over from this one
// (SIGUSR2): package main's tableflip upgrade.
type Successor interface {
	// Prepare says why no successor can start now, or nil. It runs on the
	// supervisor's loop: it must return at once.
	Prepare() error
	// Start starts the successor on the listening sockets, numbering its
	// generations on from lastGen. In handover mode the successor calls
	// handOver once its own first worker has initialised, and gets this
	// supervisor's worker's stored connections (nil outside handover
	// mode). Start returns nil once the successor serves and everything
	// has been handed to it; then this supervisor's workers drain and Run
	// returns. Otherwise it says why, and this supervisor goes on serving
	// (or, if its worker had saved, starts it again on the snapshot). It
	// runs off the loop.
	Start(lastGen int, handOver HandOver) error
}

// HandOver has a serving worker save for a successor supervisor and store
// its connections, and returns duplicates of them (the caller's to close);
// or why the worker could not save, in which case it serves on. It runs off
// the loop, and returns within the drain timeout.
type HandOver func() ([]StoredConn, error)

func (c *Config) setDefaults() error {
	if c.Path == "" {
		return errors.New("supervisor: no worker command")
	}
	if c.Sockets == nil || c.RuntimeDir == "" || c.Shim == "" {
		return errors.New("supervisor: Config needs Sockets, RuntimeDir and Shim")
	}
	if err := checkRuntimeDir(c.RuntimeDir); err != nil {
		return err
	}
	if c.Workers <= 0 {
		c.Workers = 1
	}
	if c.Predecessor != nil && !c.Handover {
		return errors.New("supervisor: a predecessor hands over only in handover mode")
	}
	if c.Standby && !c.Handover {
		return errors.New("supervisor: Standby needs handover mode")
	}
	if c.Handover && (c.Workers != 1 || c.SnapshotPath == "") {
		return errors.New("supervisor: handover mode needs exactly one worker and a snapshot path")
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
	if c.DrainSignal == 0 {
		c.DrainSignal = syscall.SIGTERM
	}
	if c.ReloadSignal == 0 {
		c.ReloadSignal = syscall.SIGHUP
	}
	if c.ReloadTimeout <= 0 {
		c.ReloadTimeout = c.ReadyTimeout
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.RestartMin <= 0 {
		c.RestartMin = DefaultRestartMin
	}
	if c.RestartMax < c.RestartMin {
		c.RestartMax = max(DefaultRestartMax, c.RestartMin)
	}
	if c.KeepVersions <= 0 {
		c.KeepVersions = DefaultKeepVersions
	}
	if c.StartAttempts <= 0 {
		c.StartAttempts = DefaultStartTries
	}
	if c.PassTimeout <= 0 {
		c.PassTimeout = DefaultPassTimeout
	}
	if c.FDStoreMax <= 0 {
		c.FDStoreMax = DefaultFDStoreMax
	}
	return nil
}

// backoff is the delay before the n-th consecutive retry (n ≥ 1): RestartMin,
// doubling with each, up to RestartMax. Crash restarts, standbys and
// rollbacks that could not start all back off this way.
func (c *Config) backoff(n int) time.Duration {
	delay := c.RestartMin
	for i := 1; i < n && delay < c.RestartMax; i++ {
		delay *= 2
	}
	return min(delay, c.RestartMax)
}
