// Package supervisor is the master's engine: it runs the worker generations
// on the sockets it is given, upgrades them in overlap mode (start the new
// generation, wait until it is ready, then drain the old one), restarts
// workers that crash, with back-off, and stops gracefully.
//
// One goroutine, the loop in Run, owns every generation and worker. Process
// exits, notify messages, probe results and timers reach it as events on one
// channel; callers reach it with requests that carry a reply channel.
package supervisor

import (
	"errors"
	"os"
	"sync"
	"time"

	"github.com/procswitch/supervisor/internal/proc"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// ErrStopping is the result of an upgrade asked for, or cut short, by a stop.
var ErrStopping = errors.New("supervisor: stopping")

// Result is the outcome of an upgrade.
type Result struct {
	Gen int   // the generation the upgrade started
	Err error // nil when it is ready and serving; else why the old one still serves
}

// Supervisor runs worker generations. Create it with New, then call Run.
type Supervisor struct {
	cfg          Config
	log          zerolog.Logger
	reaper       *proc.Reaper
	baseEnv      []string
	streamInodes []uint64

	events    chan any
	done      chan struct{} // closed when Run returns
	readyCh   chan struct{} // closed when the first generation is ready
	readyOnce sync.Once

	// Owned by the loop.
	lastGen     int
	current     *generation   // serving, or starting when it is the first
	upgrading   *generation   // starting, as the next current
	gens        []*generation // every generation with live processes or a socket
	waiters     []chan Result // replies for the running upgrade
	pending     []chan Result // replies for the one coalesced next upgrade
	requested   bool          // an upgrade is pending
	handover    *handover     // a handover past the new worker's WAITING
	lastUpgrade *UpgradeStatus
	succ        *successorSave    // a self-upgrade's save, in handover mode
	versions    map[fileID]string // binaries hashed so far
	store       []stored          // the fd store: connections handed over
	stopping    bool
}

// New checks cfg and makes the supervisor a child subreaper; nothing starts
// before Run.
func New(cfg Config) (*Supervisor, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Supervisor{
		cfg:      cfg,
		log:      cfg.Log,
		events:   make(chan any), // unbuffered: once Run returns, send fails at once
		done:     make(chan struct{}),
		readyCh:  make(chan struct{}),
		versions: map[fileID]string{},
	}
	env := cfg.Env
	if env == nil {
		env = os.Environ()
	}
	s.baseEnv = cleanEnv(env)
	for _, sock := range cfg.Sockets.Sockets {
		if sock.IsPacket() {
			continue
		}
		ino, err := sock.Inode()
		if err != nil {
			return nil, err
		}
		s.streamInodes = append(s.streamInodes, ino)
	}
	r, err := proc.NewReaper(func(pid int, ws unix.WaitStatus) {
		s.log.Debug().Int("pid", pid).Str("status", proc.Describe(ws)).Msg("reaped orphan")
	})
	if err != nil {
		return nil, err
	}
	s.reaper = r
	s.adoptStored(cfg.Stored)
	s.lastGen = max(cfg.LastGen, 0)
	return s, nil
}

// Ready is closed once the first generation is ready.
func (s *Supervisor) Ready() <-chan struct{} { return s.readyCh }

// Upgrade asks for an upgrade: a new generation from the configured path.
// A request made while an upgrade runs is coalesced with any other such
// request into one more upgrade after it. The channel receives the result.
func (s *Supervisor) Upgrade() <-chan Result {
	reply := make(chan Result, 1)
	if !s.send(upgradeRequest{reply: reply}) {
		reply <- Result{Err: ErrStopping}
	}
	return reply
}

// Stop asks every generation to drain; Run returns once all have exited.
func (s *Supervisor) Stop() { s.send(stopRequest{}) }

// send hands an event to the loop; it reports false once the loop is gone.
func (s *Supervisor) send(ev any) bool {
	select {
	case s.events <- ev:
		return true
	case <-s.done:
		return false
	}
}

// Run starts the first generation and supervises until Stop, and every
// worker has exited. It returns an error only when the first generation
// cannot be started at all.
func (s *Supervisor) Run() error {
	defer s.reaper.Close()
	defer close(s.done)
	g, err := s.newGeneration()
	if err != nil {
		return err
	}
	s.current = g
	s.gens = append(s.gens, g)
	for _, sl := range g.slots {
		if err := s.startWorker(g, sl); err != nil {
			s.killGeneration(g)
			g.notify.Close()
			return err
		}
	}
	for !s.finished() {
		s.handle(<-s.events)
	}
	return nil
}

// finished reports whether a stop has been asked for and nothing runs.
func (s *Supervisor) finished() bool {
	if !s.stopping {
		return false
	}
	for _, g := range s.gens {
		if g.alive() > 0 {
			return false
		}
	}
	for _, g := range s.gens {
		g.notify.Close()
	}
	return true
}

func (s *Supervisor) handle(ev any) {
	switch ev := ev.(type) {
	case upgradeRequest:
		s.onUpgradeRequest(ev.reply)
	case stopRequest:
		s.onStop()
	case exitEvent:
		s.onExit(ev.w)
	case notifyEvent:
		s.onNotify(ev.gen, ev.msg)
	case probeReadyEvent:
		s.markReady(ev.w)
	case readyTimeoutEvent:
		s.onReadyTimeout(ev.w, ev.token)
	case waitingEvent:
		s.onWaiting(ev.w)
	case drainTimeoutEvent:
		s.onDrainTimeout(ev.gen)
	case restartEvent:
		s.onRestart(ev.gen, ev.slot)
	case watchdogEvent:
		s.onWatchdog(ev.w)
	case statusRequest:
		ev.reply <- s.status()
	case versionEvent:
		ev.gen.version = ev.version
		s.versions[ev.id] = ev.version
		s.log.Info().Int("gen", ev.gen.n).Str("binary", ev.gen.binary).Str("version", ev.version).Msg("generation version")
		if ev.gen == s.current {
			s.observe(WorkersChanged) // the STATUS= line gains the version
		}
	case successorRequest:
		s.onSuccessorRequest(ev.reply)
	case resumeRequest:
		s.onResume(ev.reason)
	case releaseRequest:
		s.onRelease()
		close(ev.done)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
