package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/procswitch/supervisor/internal/contract"
	"github.com/procswitch/supervisor/internal/notify"
	"github.com/procswitch/supervisor/internal/proc"
	"github.com/procswitch/supervisor/internal/ready"
	"golang.org/x/sys/unix"
)

// phase is where a generation is in its life.
type phase int

const (
	starting phase = iota // started, not all workers ready yet
	serving               // the current generation
	draining              // told to drain, waiting for its workers to exit
	failed                // an upgrade that did not become ready; being killed
)

func (p phase) String() string {
	return [...]string{"starting", "serving", "draining", "failed"}[p]
}

// generation is N worker processes started from one binary on the same
// sockets, with one notify socket.
type generation struct {
	n       int
	binary  string
	phase   phase
	started time.Time
	notify  *notify.Socket
	slots   []*slot

	readyTime    time.Duration // start to all-ready
	drainStarted time.Time
	killed       int // workers killed at the drain timeout
	exe          *executable
	everReady    bool
	reaped       bool   // forgotten: its last worker exited
	version      string // sha256 of the binary, once hashed

	trigger  string        // what started it (history.Trigger*)
	rollback bool          // it runs a held earlier binary
	from     int           // the generation it replaces, 0 for the first
	blackout time.Duration // handover mode: save to ready
	drainTok int           // which drain timeout counts
	hashing  bool          // hashBinary is computing its version
	// ahead: the first generation of a supervisor that replaces a serving
	// one (Config.Predecessor), started ahead of a handover until it is
	// ready; asked: its worker said WAITING and the predecessor was asked.
	ahead, asked bool
	bad          bool // rolled back from on probation: its workers are not restarted
	inherited    int  // connections the predecessor passed on
}

// slot is one of a generation's N places for a worker: a worker that
// crashes is restarted in the same slot, with the slot's back-off.
type slot struct {
	index   int
	worker  *worker // nil while waiting to restart
	crashes int     // consecutive crashes, for the back-off
	// freeRestart: the first of these crashes ended a healthy worker, and
	// it was restarted at once
	freeRestart bool
	restart     *time.Timer
	restarts    int
	// standby: --standby's worker started ahead and kept waiting, promoted
	// when this slot's worker crashes (standby.go)
	standby      *worker
	standbyFails int         // consecutive standby exits, for their back-off
	standbyRetry *time.Timer // a standby is due once it fires
}

// worker is one running process.
type worker struct {
	gen      *generation
	slot     *slot
	proc     process
	ready    bool
	readyAt  time.Time
	lastPing time.Time
	status   string
	cancel   context.CancelFunc // stops the readiness probe and the watchdog

	handover   *handoverConn // handover mode: the connection of a worker started ahead
	readyToken int           // which ready timeout counts: handover mode re-arms it at GO
	readyTimer *time.Timer
	hung       bool              // the watchdog killed it
	goSent     bool              // handover mode: the worker started ahead was sent GO; READY=1 counts from then
	liveStore  bool              // it stored fds in the live store (fdstore.go) before it was told to hand over
	prepassed  map[uint64]string // the live store's fds it got at start, ahead of a handover: id → name
	// standbyWaiting: a standby (standby.go) that said WAITING; killed: a
	// standby ended on purpose
	standbyWaiting, killed bool

	version   string // its last VERSION=: what it runs beyond the binary (scripts, configuration)
	reloading bool   // a reload runs: it was sent the reload signal and has not answered yet
	reloadAck bool   // it said RELOADING=1 for the running reload
}

func (w *worker) pid() int { return w.proc.PID() }

// pids lists the generation's live worker PIDs.
func (g *generation) pids() []int {
	var pids []int
	for _, s := range g.slots {
		if s.worker != nil {
			pids = append(pids, s.worker.pid())
		}
	}
	return pids
}

func (g *generation) allReady() bool {
	for _, s := range g.slots {
		if s.worker == nil || !s.worker.ready {
			return false
		}
	}
	return true
}

func (g *generation) alive() int { return len(g.pids()) }

// workerByPID finds the generation's worker with that PID.
func (g *generation) workerByPID(pid int) *worker {
	for _, s := range g.slots {
		if s.worker != nil && s.worker.pid() == pid {
			return s.worker
		}
		if s.standby != nil && s.standby.pid() == pid {
			return s.standby
		}
	}
	return nil
}

func (g *generation) stopTimers() {
	for _, s := range g.slots {
		if s.restart != nil {
			s.restart.Stop()
			s.restart = nil
		}
		if s.standbyRetry != nil {
			s.standbyRetry.Stop()
			s.standbyRetry = nil
		}
	}
}

// newGeneration binds the generation's notify socket; workers start later.
func (s *Supervisor) newGeneration() (*generation, error) {
	exe, err := openExecutable(s.cfg.Path)
	if err != nil {
		return nil, err
	}
	return s.newGenerationFrom(s.cfg.Path, exe)
}

// newGenerationFrom makes a generation that runs exe, found at binary.
func (s *Supervisor) newGenerationFrom(binary string, exe *executable) (*generation, error) {
	s.lastGen++
	g := &generation{n: s.lastGen, binary: binary, started: time.Now(), exe: exe}
	path := notifyPath(s.cfg.RuntimeDir, g.n)
	sock, err := notify.Listen(path)
	if err != nil {
		exe.close()
		return nil, err
	}
	g.notify = sock
	g.slots = make([]*slot, s.cfg.Workers)
	for i := range g.slots {
		g.slots[i] = &slot{index: i}
	}
	go s.readNotify(g)
	return g, nil
}

// notifyPath names generation n's notify socket. The supervisor's PID keeps
// two supervisors (an old and a new one) apart in one runtime directory.
func notifyPath(dir string, n int) string {
	return filepath.Join(dir, fmt.Sprintf("notify-%d-%d.sock", os.Getpid(), n))
}

// maxSocketPath is the longest path a unix socket address holds (sun_path
// is 108 bytes with its terminating NUL).
const maxSocketPath = 107

// checkRuntimeDir fails early, with the fix in words, when the runtime
// directory is too long to hold a notify socket for any generation.
func checkRuntimeDir(dir string) error {
	if longest := notifyPath(dir, 1<<31-1); len(longest) > maxSocketPath {
		return fmt.Errorf("supervisor: runtime directory %s is too long for unix socket paths (%d bytes at most, with the socket's name): use a shorter --runtime-dir", dir, maxSocketPath-len(longest)+len(dir))
	}
	return nil
}

// exitedKey marks, in the supervisor's own datagram on a notify socket, that
// the worker with that PID has exited.
const exitedKey = "X_SUPERVISOR_EXITED"

// readNotify forwards the generation's notify messages to the loop until
// the socket is closed.
func (s *Supervisor) readNotify(g *generation) {
	for {
		msg, err := g.notify.Read()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn().Err(err).Int("gen", g.n).Msg("bad notify message")
			continue
		}
		s.send(notifyEvent{gen: g, msg: msg})
		if msg.Vars[reexecKey] != "" && msg.PID == os.Getpid() {
			return // a re-exec (reexec.go): what follows waits in the socket
		}
	}
}

// startWorker starts a process in slot sl of g through the exec shim.
func (s *Supervisor) startWorker(g *generation, sl *slot) error {
	_, err := s.launchWorker(g, sl, false)
	return err
}

// launchWorker starts a process for slot sl of g: its worker, or with
// standby the slot's standby (standby.go), started ahead as for a handover.
func (s *Supervisor) launchWorker(g *generation, sl *slot, standby bool) (*worker, error) {
	l, err := s.prepareLaunch(g, standby)
	if err != nil {
		return nil, err
	}
	argv := append([]string{g.binary}, s.cfg.Args...)
	path, args := proc.ShimCommand(s.cfg.Shim, argv)
	p, err := s.procs.Start(&proc.Command{Path: path, Args: args, Env: l.env, Files: l.files})
	if l.childEnd >= 0 {
		unix.Close(l.childEnd)
	}
	if err != nil {
		if l.handover != nil {
			l.handover.conn.Close()
		}
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &worker{gen: g, slot: sl, proc: p, cancel: cancel, handover: l.handover, prepassed: l.prepassed}
	if standby {
		sl.standby = w
		s.standbys++
		s.log.Info().Int("gen", g.n).Int("slot", sl.index).Int("pid", p.PID()).Msg("standby started")
	} else {
		sl.worker = w
		s.log.Debug().Int("gen", g.n).Int("slot", sl.index).Int("pid", p.PID()).Str("binary", g.binary).Msg("worker started")
	}
	s.watchExit(w)
	if w.handover != nil {
		go s.readWaiting(w)
	} else if s.cfg.Ready.Mode != ready.Notify {
		go s.probe(ctx, w)
	}
	w.readyTimer = time.AfterFunc(s.cfg.ReadyTimeout, func() { s.send(readyTimeoutEvent{w: w}) })
	return w, nil
}

// watchExit tells the loop when w exits.
func (s *Supervisor) watchExit(w *worker) {
	go func() {
		<-w.proc.Done()
		if w.handover != nil {
			w.handover.conn.Close()
		}
		// The exit reaches the loop behind whatever the worker sent before
		// it exited (FDSTORE=1, HANDOVER=saved), through the same queue.
		if w.gen.notify.Send(exitedKey+"="+strconv.Itoa(w.pid())) != nil {
			s.send(exitEvent{w: w})
		}
	}()
}

// launch is what a worker is started with beyond its command line.
type launch struct {
	files    []int    // fd 3 onwards
	env      []string // the whole environment
	handover *handoverConn
	childEnd int // the worker's end of the handover connection, closed after start; -1 if none
	// prepassed are the live store's fds a worker started ahead of a
	// handover got at start (fdstore.go's passAhead): GO passes the rest.
	prepassed map[uint64]string
}

// prepareLaunch lays out a worker's fds: the listening sockets, then the
// live fd store (fdstore.go), then (a cold start in handover mode) the
// connections handed over, all counted in LISTEN_FDS;
// then, uncounted, the handover connection of a worker started ahead of a
// handover, and the held binary when the path no longer names it.
func (s *Supervisor) prepareLaunch(g *generation, standby bool) (*launch, error) {
	l := &launch{files: s.cfg.Sockets.FDs(), childEnd: -1}
	names := []string{s.cfg.Sockets.Names()}
	ahead := g == s.next || g.ahead || standby
	keep := func(liveFD) bool { return true }
	if s.cfg.Handover && ahead { // now, to prepare; GO passes what changed since
		l.prepassed = map[uint64]string{}
		keep = passAhead(l.prepassed)
	}
	for _, st := range s.liveForStart(keep) {
		l.files = append(l.files, st.fd)
		names = append(names, st.name)
	}
	if s.cfg.Handover && !ahead {
		for _, st := range s.store {
			l.files = append(l.files, st.fd)
			names = append(names, st.name)
		}
	}
	env := s.workerEnv(g, len(l.files), strings.Join(names, ":"))
	if s.cfg.Handover {
		handoverFD := -1
		if ahead {
			h, child, err := newHandoverConn()
			if err != nil {
				return nil, err
			}
			l.handover, l.childEnd = h, child
			handoverFD = contract.ListenFDsStart + len(l.files)
			l.files = append(l.files, child)
		}
		env = s.handoverEnv(env, handoverFD)
		if standby {
			env = append(env, contract.EnvStandby+"=1")
		}
	}
	// The held file, binary or script, whenever the path names another: the
	// shim runs it or nothing (proc.EnvExecFD says how, and what $0 a script
	// then sees). Where the path still names it, by path, for a natural
	// argv[0] and /proc/PID/exe.
	if g.exe != nil && !g.exe.at(g.binary) {
		env = append(env, proc.EnvExecFD+"="+strconv.Itoa(contract.ListenFDsStart+len(l.files)))
		l.files = append(l.files, g.exe.fd)
	}
	l.env = env
	return l, nil
}

func (s *Supervisor) probe(ctx context.Context, w *worker) {
	if err := s.cfg.Ready.Await(ctx, ready.Target{PID: w.pid(), Sockets: s.streamInodes}); err == nil {
		s.send(probeReadyEvent{w: w})
	}
}

// workerEnv is systemd's socket-activation environment, plus ours.
func (s *Supervisor) workerEnv(g *generation, nfds int, names string) []string {
	env := make([]string, 0, len(s.baseEnv)+8)
	env = append(env, s.baseEnv...)
	env = append(env,
		contract.EnvListenFDs+"="+strconv.Itoa(nfds),
		contract.EnvListenFDNames+"="+names,
		contract.EnvNotifySocket+"="+g.notify.Path(),
		contract.EnvDrainSignal+"="+unix.SignalName(s.cfg.DrainSignal),
		contract.EnvGeneration+"="+strconv.Itoa(g.n),
		contract.EnvReloadSignal+"="+unix.SignalName(s.cfg.ReloadSignal),
	)
	if s.cfg.Watchdog > 0 {
		env = append(env, contract.EnvWatchdogUSec+"="+strconv.FormatInt(s.cfg.Watchdog.Microseconds(), 10))
	}
	return env
}

// cleanEnv drops the variables systemd set for the supervisor itself, which
// must not reach workers: they get their own.
func cleanEnv(env []string) []string {
	drop := []string{contract.EnvListenFDs, contract.EnvListenFDNames, contract.EnvListenPID,
		contract.EnvNotifySocket, contract.EnvWatchdogUSec, contract.EnvWatchdogPID,
		contract.EnvDrainSignal, contract.EnvReloadSignal, contract.EnvGeneration, contract.EnvMode, contract.EnvSnapshot,
		contract.EnvHandoverFD, contract.EnvStandby, proc.EnvExecFD}
	out := make([]string, 0, len(env))
next:
	for _, kv := range env {
		for _, k := range drop {
			if strings.HasPrefix(kv, k+"=") {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}
