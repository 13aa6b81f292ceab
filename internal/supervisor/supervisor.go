// Package supervisor is the master's engine: it runs the worker generations
// on the sockets it is given, upgrades them in overlap mode (start the new
// generation, wait until it is ready, then drain the old one) or in handover
// mode (the old worker saves its state and hands its connections over),
// starts a successor supervisor on SIGUSR2, restarts workers that crash,
// with back-off, and stops gracefully.
//
// One goroutine, the loop in Run, owns every generation and worker. Process
// exits, notify messages, probe results and timers reach it as events on one
// channel; callers reach it with requests that carry a reply channel.
//
// The supervisor's lifecycle is one state machine, in machine.go: the
// states, a table of what each event does in each state, and the handlers.
// Processes are started through a small seam (seam.go), so that the machine
// is tested in-process with fake workers.
package supervisor

import (
	"errors"
	"os"
	"sync"
	"time"

	"github.com/procswitch/supervisor/internal/history"
	"github.com/procswitch/supervisor/internal/proc"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// Result is the outcome of an upgrade, a rollback or a reload.
type Result struct {
	Gen int   // the generation the upgrade started; the generation a reload reloaded
	Err error // nil when it is ready and serving; else an *UpgradeError that says why the old one still serves
	// Version, of a reload: the VERSION= its workers reported, "" if none
	// did (several, comma-separated, if they differ).
	Version string
}

// Supervisor runs worker generations. Create it with New, then call Run.
type Supervisor struct {
	cfg          Config
	log          zerolog.Logger
	procs        processes
	baseEnv      []string
	streamInodes []uint64

	events    chan any
	done      chan struct{} // closed when Run returns
	readyCh   chan struct{} // closed when the first generation is ready
	readyOnce sync.Once

	// Owned by the loop. Which of these are set in each state is in
	// machine.go, with the state machine.
	state           state
	current         *generation   // the generation that serves, or is starting as the first
	next            *generation   // the generation an upgrade starts beside current
	handover        *handover     // handover mode: the new worker said WAITING
	self            *selfUpgrade  // SIGUSR2: a successor supervisor is starting
	waiters         []chan Result // replies for the running upgrade
	queued          []chan Result // replies for the one coalesced next upgrade
	store           []stored      // the handover's batch: connections handed over (handover.go)
	live            *fdStore      // the live fd store (fdstore.go)
	queuedTrigger   string        // what asked for the queued upgrade (history.Trigger*)
	held            []*held       // binaries held for rollbacks, newest first (versions.go)
	probation       *probation    // the current generation's trial after an upgrade
	reload          *reloadRun    // the running reload in place (reload.go)
	lastReload      *UpgradeStatus
	rollingBack     *rollbackRun    // a rollback on probation in handover mode, until it serves
	rollbackWaiting bool            // a rollback's generation could not be made: a retry is due
	startFailures   int             // the first generation's failed starts
	fatal           error           // why Run gives up
	unhashed        []pendingRecord // history records waiting for their version

	gens            []*generation // every generation with live processes or a socket
	standbys        int           // standby processes not yet reaped (standby.go), whatever their generation
	lastGen         int
	lastUpgrade     *UpgradeStatus
	lastSelfUpgrade *UpgradeStatus
	versions        map[fileID]string // binaries hashed so far
	afterEvent      func(ev any)      // tests: called on the loop after each event
	reexecing       bool              // a re-exec in place quiesces (reexec.go): no standby is started
	restored        bool              // this image took the state over from a re-exec (Config.Image)
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
	s.procs = cfg.processes
	var adopt []proc.Adoptee
	if cfg.Image != nil {
		adopt = cfg.Image.adoptees()
	}
	var reaper *proc.Reaper
	if s.procs == nil {
		r, err := proc.NewReaper(func(pid int, ws unix.WaitStatus) {
			s.log.Debug().Int("pid", pid).Str("status", proc.Describe(ws)).Msg("reaped orphan")
		}, adopt...)
		if err != nil {
			return nil, err
		}
		s.procs, reaper = osProcesses{r}, r
	}
	s.live = newFDStore(s.raiseFDLimit(cfg.FDStoreMax))
	s.adoptStored(cfg.Stored)
	s.lastGen = max(cfg.LastGen, 0)
	if cfg.Image != nil {
		if reaper == nil {
			return nil, errors.New("supervisor: a re-exec image needs the real processes")
		}
		if err := s.restore(cfg.Image, reaper); err != nil {
			return nil, err
		}
		s.restored = true
	}
	return s, nil
}

// Ready is closed once the first generation is ready.
func (s *Supervisor) Ready() <-chan struct{} { return s.readyCh }

// Upgrade asks for an upgrade: a new generation from the configured path.
// A request made while an upgrade runs is coalesced with any other such
// request into one more upgrade after it. The channel receives the result.
func (s *Supervisor) Upgrade() <-chan Result { return s.UpgradeBy(history.TriggerSIGHUP) }

// UpgradeBy is Upgrade, recorded in the history as asked for by trigger
// (history.TriggerSIGHUP, history.TriggerCtl).
func (s *Supervisor) UpgradeBy(trigger string) <-chan Result {
	return s.request(func(reply chan Result) any { return upgradeRequest{reply: reply, trigger: trigger} })
}

// Rollback asks to switch back to a held earlier binary: generation to's,
// or with to 0 the one that served before the current generation. It is an
// upgrade like any other (a handover in handover mode), from the held file
// rather than the path. The channel receives the result.
func (s *Supervisor) Rollback(to int) <-chan Result {
	return s.request(func(reply chan Result) any { return rollbackRequest{reply: reply, to: to} })
}

// Reload asks every worker of the serving generation to reload in place
// (Config.ReloadSignal, systemd's Type=notify-reload contract), recorded
// in the history as asked for by trigger. The channel receives the result
// once every worker has answered, or the reload timed out; Gen is the
// generation reloaded. There is no process switch: a worker whose reload
// failed serves on with what it ran before.
func (s *Supervisor) Reload(trigger string) <-chan Result {
	return s.request(func(reply chan Result) any { return reloadRequest{reply: reply, trigger: trigger} })
}

// SelfUpgrade asks for a successor supervisor (Config.Successor) to take
// over: SIGUSR2. The channel receives the result; Gen is 0.
func (s *Supervisor) SelfUpgrade() <-chan Result {
	return s.request(func(reply chan Result) any { return selfUpgradeRequest{reply: reply} })
}

func (s *Supervisor) request(ev func(chan Result) any) <-chan Result {
	reply := make(chan Result, 1)
	if !s.send(ev(reply)) {
		reply <- Result{Err: stoppingError(0, KindRefused)}
	}
	return reply
}

// Stop asks every generation to drain; Run returns once all have exited.
func (s *Supervisor) Stop() { s.send(stopRequest{}) }

// Retired reports, once Run has returned, whether a successor supervisor
// took over (SIGUSR2) rather than a stop.
func (s *Supervisor) Retired() bool { return s.state == stateRetired }

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
// cannot be started at all, or did not become ready in
// Config.StartAttempts attempts.
func (s *Supervisor) Run() error {
	defer s.procs.Close()
	defer close(s.done)
	if s.restored {
		s.reconcileStandbys() // the previous image ended its standbys
		return s.loop()
	}
	g, err := s.newGeneration()
	if err != nil {
		return err
	}
	s.current = g
	s.gens = append(s.gens, g)
	if s.cfg.Predecessor != nil {
		s.startAhead(g)
	}
	for _, sl := range g.slots {
		if err := s.startWorker(g, sl); err != nil {
			s.killGeneration(g)
			g.notify.Close()
			return err
		}
	}
	return s.loop()
}

// loop handles events until every worker has exited after a stop or a
// successor's takeover.
func (s *Supervisor) loop() error {
	for !s.finished() {
		s.dispatch(<-s.events)
	}
	s.live.closeAll() // as systemd flushes a stopped service's fd store
	return s.fatal
}

// dispatch handles one event from the loop's channel.
func (s *Supervisor) dispatch(ev any) {
	s.handle(ev)
	if s.afterEvent != nil {
		s.afterEvent(ev)
	}
}

func (s *Supervisor) handle(ev any) {
	switch ev := ev.(type) {
	case upgradeRequest:
		s.onUpgradeRequest(ev.reply, ev.trigger)
	case rollbackRequest:
		s.onRollbackRequest(ev.reply, ev.to)
	case stopRequest:
		s.onStop()
	case selfUpgradeRequest:
		s.onSelfUpgradeRequest(ev.reply)
	case reexecRequest:
		s.onReexecRequest(ev.reply)
	case selfUpgradeRefusedEvent:
		s.refuseSelfUpgrade(ev.kind, ev.reason)
	case successorEvent:
		s.onSuccessor(ev.err)
	case selfHandOverRequest:
		s.onSelfHandOver(ev.reply)
	case predecessorEvent:
		s.onPredecessor(ev)
	case exitEvent:
		s.onExit(ev.w)
	case notifyEvent:
		s.onNotify(ev.gen, ev.msg)
	case probeReadyEvent:
		s.markReady(ev.w)
	case passFailedEvent:
		s.onPassFailed(ev.w, ev.err)
	case readyTimeoutEvent:
		s.onReadyTimeout(ev.w, ev.token)
	case waitingEvent:
		if w := ev.w; w.slot.standby == w {
			s.onStandbyWaiting(w)
			break
		}
		if w := ev.w; w.gen.ahead && w.gen == s.current {
			s.onAheadWaiting(w)
			break
		}
		s.onWaiting(ev.w)
	case drainTimeoutEvent:
		s.onDrainTimeout(ev.gen, ev.token)
	case restartEvent:
		s.onRestart(ev.gen, ev.slot)
	case watchdogEvent:
		s.onWatchdog(ev.w)
	case statusRequest:
		ev.reply <- s.status()
	case versionEvent:
		s.onVersion(ev.gen, ev.id, ev.version)
	case reloadRequest:
		s.onReloadRequest(ev.reply, ev.trigger)
	case reloadTimeoutEvent:
		s.onReloadTimeout(ev.run)
	case probationEndEvent:
		s.onProbationEnd(ev.gen)
	case rollbackRetryEvent:
		s.onRollbackRetry(ev)
	case standbyRetryEvent:
		s.onStandbyRetry(ev.slot)
	}
	s.reconcileStandbys()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
