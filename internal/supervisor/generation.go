package supervisor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/procswitch/supervisor/handoff"
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
	everReady    bool
}

// slot is one of a generation's N places for a worker: a worker that
// crashes is restarted in the same slot, with the slot's back-off.
type slot struct {
	index    int
	worker   *worker // nil while waiting to restart
	crashes  int     // consecutive crashes, for the back-off
	restart  *time.Timer
	restarts int
}

// worker is one running process.
type worker struct {
	gen      *generation
	slot     *slot
	proc     *proc.Process
	ready    bool
	readyAt  time.Time
	lastPing time.Time
	status   string
	cancel   context.CancelFunc // stops the readiness probe and the watchdog
}

func (w *worker) pid() int { return w.proc.Pid }

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
	}
	return nil
}

func (g *generation) stopTimers() {
	for _, s := range g.slots {
		if s.restart != nil {
			s.restart.Stop()
			s.restart = nil
		}
	}
}

// newGeneration binds the generation's notify socket; workers start later.
func (s *Supervisor) newGeneration() (*generation, error) {
	s.lastGen++
	g := &generation{n: s.lastGen, binary: s.cfg.Path, started: time.Now()}
	path := filepath.Join(s.cfg.RuntimeDir, fmt.Sprintf("notify-%d-%d.sock", os.Getpid(), g.n))
	sock, err := notify.Listen(path)
	if err != nil {
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

// readNotify forwards the generation's notify messages to the loop until
// the socket is closed.
func (s *Supervisor) readNotify(g *generation) {
	for {
		msg, err := g.notify.Read()
		if err != nil {
			if strings.Contains(err.Error(), "use of closed") {
				return
			}
			s.log.Warn().Err(err).Int("gen", g.n).Msg("bad notify message")
			continue
		}
		s.send(notifyEvent{gen: g, msg: msg})
	}
}

// startWorker starts a process in slot sl of g through the exec shim.
func (s *Supervisor) startWorker(g *generation, sl *slot) error {
	argv := append([]string{g.binary}, s.cfg.Args...)
	path, args := proc.ShimCommand(s.cfg.Shim, argv)
	p, err := s.reaper.Start(&proc.Command{
		Path:  path,
		Args:  args,
		Env:   s.workerEnv(g),
		Files: s.cfg.Sockets.FDs(),
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &worker{gen: g, slot: sl, proc: p, cancel: cancel}
	sl.worker = w
	s.log.Debug().Int("gen", g.n).Int("slot", sl.index).Int("pid", p.Pid).Str("binary", g.binary).Msg("worker started")
	go func() {
		<-p.Done()
		s.send(exitEvent{w: w})
	}()
	if s.cfg.Ready.Mode != ready.Notify {
		go s.probe(ctx, w)
	}
	time.AfterFunc(s.cfg.ReadyTimeout, func() { s.send(readyTimeoutEvent{w: w}) })
	return nil
}

func (s *Supervisor) probe(ctx context.Context, w *worker) {
	if err := s.cfg.Ready.Await(ctx, ready.Target{PID: w.pid(), Sockets: s.streamInodes}); err == nil {
		s.send(probeReadyEvent{w: w})
	}
}

// workerEnv is systemd's socket-activation environment, plus ours.
func (s *Supervisor) workerEnv(g *generation) []string {
	env := make([]string, 0, len(s.baseEnv)+8)
	env = append(env, s.baseEnv...)
	env = append(env,
		handoff.EnvListenFDs+"="+strconv.Itoa(len(s.cfg.Sockets.Sockets)),
		handoff.EnvListenFDNames+"="+s.cfg.Sockets.Names(),
		handoff.EnvNotifySocket+"="+g.notify.Path(),
		handoff.EnvDrainSignal+"="+unix.SignalName(s.cfg.DrainSignal),
		handoff.EnvGeneration+"="+strconv.Itoa(g.n),
	)
	if s.cfg.Watchdog > 0 {
		env = append(env, handoff.EnvWatchdogUSec+"="+strconv.FormatInt(s.cfg.Watchdog.Microseconds(), 10))
	}
	return env
}

// cleanEnv drops the variables systemd set for the supervisor itself, which
// must not reach workers: they get their own.
func cleanEnv(env []string) []string {
	drop := []string{handoff.EnvListenFDs, handoff.EnvListenFDNames, handoff.EnvListenPID,
		handoff.EnvNotifySocket, handoff.EnvWatchdogUSec, handoff.EnvWatchdogPID,
		handoff.EnvDrainSignal, handoff.EnvGeneration}
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
