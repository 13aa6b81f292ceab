package supervisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/internal/contract"
	"github.com/procswitch/supervisor/internal/proc"
	"github.com/procswitch/supervisor/internal/ready"
	"github.com/procswitch/supervisor/listener"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// Fakes for the seam (seam.go) and for Config.Successor, so that the state
// machine runs in-process: a fake worker exits when the test says so, when
// the supervisor kills it, or, if it was made to, at its drain signal.

// fakePIDBase is above every PID the kernel hands out (pid_max is at most
// 2^22): a fake PID is never ours, nor anybody's.
const fakePIDBase = 1 << 22

// fakeProcesses starts fake workers.
type fakeProcesses struct {
	mu          sync.Mutex
	procs       []*fakeProcess
	exitOnDrain bool // new workers exit at the drain signal
	noReload    bool // new workers do not catch the reload signal
	failGen     int  // Start fails for workers of this generation
	holds       int  // HoldOrphans calls: a successor is starting
	releases    int  // their releases
	overlaps    int  // holds while another was held: two successors at once
	released    chan struct{}
	closes      int
}

// fakeProcess is one fake worker.
type fakeProcess struct {
	pid         int
	gen         int // its SUPERVISOR_GENERATION
	started     time.Time
	exitOnDrain bool
	noReload    bool // it does not catch the reload signal (Disposition)
	done        chan struct{}

	mu          sync.Mutex
	status      unix.WaitStatus
	handover    int // its end of the handover connection, or -1; closed at exit
	signals     []syscall.Signal
	failedSaves int // HANDOVER=failed sent: it serves again, and may be told to drain again
	groupKilled int
}

// exitStatus is the wait status of a process that exited with code.
func exitStatus(code int) unix.WaitStatus { return unix.WaitStatus(code << 8) }

// killedStatus is the wait status of a process killed by SIGKILL.
const killedStatus = unix.WaitStatus(syscall.SIGKILL)

func (f *fakeProcesses) Start(c *proc.Command) (process, error) {
	env := map[string]string{}
	for _, kv := range c.Env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	gen, _ := strconv.Atoi(env[contract.EnvGeneration])
	f.mu.Lock()
	defer f.mu.Unlock()
	if gen == f.failGen {
		return nil, fmt.Errorf("fake: cannot start a worker of generation %d", gen)
	}
	p := &fakeProcess{pid: fakePIDBase + len(f.procs), gen: gen, started: time.Now(),
		exitOnDrain: f.exitOnDrain, noReload: f.noReload, done: make(chan struct{}), handover: -1}
	if v, ok := env[contract.EnvHandoverFD]; ok {
		// The supervisor closes the worker's end once it has started: the
		// fake holds a duplicate, as a worker would, so that GO gets through.
		fd, _ := strconv.Atoi(v)
		p.handover, _ = unix.FcntlInt(uintptr(c.Files[fd-contract.ListenFDsStart]), unix.F_DUPFD_CLOEXEC, 0)
	}
	f.procs = append(f.procs, p)
	return p, nil
}

func (f *fakeProcesses) Freeze() func() { return func() {} }

func (f *fakeProcesses) HoldOrphans() func() {
	f.mu.Lock()
	if f.holds > f.releases {
		f.overlaps++
	}
	f.holds++
	f.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			f.releases++
			f.mu.Unlock()
			f.released <- struct{}{}
		})
	}
}

// Disposition: a fake catches every signal, unless made with noReload.
func (f *fakeProcesses) Disposition(pid int, sig syscall.Signal) (disposition, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.procs {
		if p.pid == pid {
			return disposition{caught: !p.noReload}, nil
		}
	}
	return disposition{}, fmt.Errorf("fake: no process %d", pid)
}

// signalled counts the times p was sent sig.
func (p *fakeProcess) signalled(sig syscall.Signal) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, s := range p.signals {
		if s == sig {
			n++
		}
	}
	return n
}

func (f *fakeProcesses) Close() {
	f.mu.Lock()
	f.closes++
	f.mu.Unlock()
}

func newFakeProcesses() *fakeProcesses {
	return &fakeProcesses{released: make(chan struct{}, 8)}
}

// all is every fake started so far.
func (f *fakeProcesses) all() []*fakeProcess {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*fakeProcess(nil), f.procs...)
}

// held is how many HoldOrphans calls are not released yet.
func (f *fakeProcesses) held() (holds, inFlight int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.holds, f.holds - f.releases
}

func (f *fakeProcesses) failStartOf(gen int) {
	f.mu.Lock()
	f.failGen = gen
	f.mu.Unlock()
}

func (p *fakeProcess) PID() int                { return p.pid }
func (p *fakeProcess) StartTime() time.Time    { return p.started }
func (p *fakeProcess) Done() <-chan struct{}   { return p.done }
func (p *fakeProcess) Status() unix.WaitStatus { <-p.done; return p.status }
func (p *fakeProcess) Kill() error             { p.exit(killedStatus); return nil }
func (p *fakeProcess) String() string          { return fmt.Sprintf("fake %d (gen %d)", p.pid, p.gen) }

func (p *fakeProcess) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *fakeProcess) Signal(sig syscall.Signal) error {
	if p.exited() {
		return proc.ErrProcessDone
	}
	p.mu.Lock()
	p.signals = append(p.signals, sig)
	p.mu.Unlock()
	if sig == syscall.SIGTERM && p.exitOnDrain {
		p.exit(exitStatus(0))
	}
	return nil
}

func (p *fakeProcess) KillGroup() {
	p.mu.Lock()
	p.groupKilled++
	p.mu.Unlock()
}

// exit makes the process exit with ws, unless it has already.
func (p *fakeProcess) exit(ws unix.WaitStatus) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited() {
		return
	}
	p.status = ws
	if p.handover >= 0 {
		unix.Close(p.handover)
		p.handover = -1
	}
	close(p.done)
}

// awaitGo waits, bounded, for GO on the handover connection, as a worker
// started ahead does. The machine's handovers store no connections: GO is
// the first message.
func (p *fakeProcess) awaitGo(bound time.Duration) error {
	p.mu.Lock() // a duplicate: exit may close the fake's own meanwhile
	fd, err := unix.FcntlInt(uintptr(p.handover), unix.F_DUPFD_CLOEXEC, 0)
	p.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%v: no handover connection: %w", p, err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(bound.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	buf := make([]byte, 64)
	read := func() (int, error) {
		n, err := unix.Read(fd, buf)
		for err == unix.EINTR {
			n, err = unix.Read(fd, buf)
		}
		return n, err
	}
	n, err := read()
	if err == nil && string(buf[:n]) == contract.HandoverCrashed {
		n, err = read() // a restart's terms: the old worker died before it saved
	}
	if err != nil || string(buf[:n]) != contract.HandoverGo {
		return fmt.Errorf("%v: %q (%v), want GO within %v", p, buf[:max(n, 0)], err, bound)
	}
	return nil
}

// fakeSuccessor is a successor supervisor whose Start waits until the test
// answers it on the channel it sends: nil, it serves; an error, it failed.
// In handover mode the test has it ask for the handover (askHandOver), as a
// real successor does once its first worker has initialised.
type fakeSuccessor struct {
	starts    chan chan error
	handOvers chan HandOver // each handover-mode Start's, for askHandOver

	mu         sync.Mutex
	prepareErr error
}

// askHandOver calls the running Start's HandOver, off the loop, and closes
// the connections it returns.
func (f *fakeSuccessor) askHandOver(t *testing.T) {
	var h HandOver
	select {
	case h = <-f.handOvers:
	case <-time.After(waitBound):
		t.Fatalf("no successor Start with a HandOver within %v", waitBound)
	}
	go func() {
		conns, _ := h()
		for _, c := range conns {
			unix.Close(c.FD)
		}
	}()
}

func (f *fakeSuccessor) Prepare() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.prepareErr
}

func (f *fakeSuccessor) Start(lastGen int, handOver HandOver) error {
	answer := make(chan error)
	if handOver != nil {
		f.handOvers <- handOver
	}
	f.starts <- answer
	return <-answer
}

func (f *fakeSuccessor) setPrepareErr(err error) {
	f.mu.Lock()
	f.prepareErr = err
	f.mu.Unlock()
}

// errNoSuccessor is a failed successor's answer.
var errNoSuccessor = errors.New("fake: the new supervisor exited before it served")

// The harness: a supervisor on the fakes, run by its own loop; the test
// sends events and learns, through afterEvent, what the loop did with them.

// machine is one supervisor on fake processes, and what its loop has told
// the test.
type machine struct {
	t       *testing.T
	s       *Supervisor
	procs   *fakeProcesses
	succ    *fakeSuccessor
	path    string // the worker binary: chmod -x makes it not executable
	logs    *logRecorder
	runErr  chan error
	ran     *error
	goSeen  *worker                  // the last worker that read GO
	inEvent bool                     // applying the case's event, not the setup
	replies map[string]<-chan Result // by name: up, self, req

	mu         sync.Mutex
	changed    chan struct{} // after each event the loop handles
	last       view
	exits      map[int]bool // PIDs whose exit the loop has handled
	answers    int          // successor answers handled
	synced     chan Status  // the last status request handled
	violations []string
	exes       map[*executable]bool // every generation's binary
}

// machineEnv is what the cases share, one after the other: the listening
// socket, the runtime directory and the worker binary.
type machineEnv struct {
	sockets     *listener.Set
	dir, worker string
}

// newMachineEnv puts the runtime directory on tmpfs, as /run is, where
// binding a notify socket costs little, if it can.
func newMachineEnv(t *testing.T) machineEnv {
	dir, err := os.MkdirTemp("/dev/shm", "supervisor-machine-")
	if err == nil {
		t.Cleanup(func() { os.RemoveAll(dir) })
	} else {
		dir = t.TempDir()
	}
	env := machineEnv{dir: dir, worker: filepath.Join(dir, "worker")}
	if err := os.WriteFile(env.worker, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec, err := listener.ParseSpec("tcp://127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	if env.sockets, err = listener.Open([]listener.Spec{spec}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.sockets.Close() })
	return env
}

// newMachine runs a supervisor on fakes; tune, if set, adjusts its Config
// (cfg.processes is the *fakeProcesses).
func newMachine(t *testing.T, env machineEnv, tune func(*Config)) *machine {
	m := &machine{t: t, procs: newFakeProcesses(), succ: &fakeSuccessor{starts: make(chan chan error, 2), handOvers: make(chan HandOver, 2)},
		path: env.worker, logs: &logRecorder{changed: make(chan struct{}, 1)}, runErr: make(chan error, 1),
		replies: map[string]<-chan Result{}, changed: make(chan struct{}, 1), exits: map[int]bool{},
		exes: map[*executable]bool{}}
	cfg := Config{Path: m.path, Ready: ready.Probe{Mode: ready.Notify}, ReadyTimeout: time.Hour,
		DrainTimeout: time.Hour, RestartMin: time.Hour, RestartMax: time.Hour, Sockets: env.sockets,
		RuntimeDir: env.dir, Shim: m.path, Successor: m.succ, Log: zerolog.New(m.logs), processes: m.procs,
		Reexec: func(img *Image) error { // a re-exec in place that fails at the exec: the image serves on
			if len(img.Gen.Workers) == 0 || img.Gen.NotifyFD < 0 {
				t.Errorf("re-exec image without workers or notify socket: %+v", img.Gen)
			}
			return errors.New("fake: exec failed")
		}}
	if tune != nil {
		tune(&cfg)
	}
	var err error
	if m.s, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	m.s.afterEvent = m.afterEvent
	go func() { m.runErr <- m.s.Run() }()
	t.Cleanup(m.close)
	m.status() // the first event: a view
	return m
}

// storeOne gives the first generation one stored connection, as from a
// predecessor supervisor.
func storeOne(t *testing.T, c *Config) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[1]) })
	c.Stored = []StoredConn{{Name: "conn0", FD: fds[0]}}
}

// afterEvent runs on the loop: the invariants, and a view for the test.
func (m *machine) afterEvent(ev any) {
	err := m.s.checkInvariants()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.violations = append(m.violations, fmt.Sprintf("after %T: %v", ev, err))
	}
	m.last = m.look(m.last)
	for _, g := range m.s.gens {
		m.exes[g.exe] = true
	}
	switch ev := ev.(type) {
	case notifyEvent:
		if pid, err := strconv.Atoi(ev.msg.Vars[exitedKey]); err == nil && ev.msg.PID == os.Getpid() {
			m.exits[pid] = true
		}
	case exitEvent:
		m.exits[ev.w.pid()] = true
	case successorEvent:
		m.answers++
	case statusRequest:
		m.synced = ev.reply
	}
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// settle waits until the loop has handled everything the last event set
// off: the exits of the workers it killed, and what those set off.
func (m *machine) settle() {
	m.t.Helper()
	for {
		if _, ok := m.sync(); !ok {
			return
		}
		var exited []int
		for _, p := range m.procs.all() {
			if p.exited() {
				exited = append(exited, p.pid)
			}
		}
		done := func() bool {
			for _, pid := range exited {
				if !m.exits[pid] {
					return false
				}
			}
			return true
		}
		m.mu.Lock()
		settled := done()
		m.mu.Unlock()
		if !settled {
			m.waitFor(fmt.Sprintf("the exits of %v", exited), done)
			continue
		}
		// A worker sent GO reads it before anything else happens to it: the
		// supervisor closes its end of the connection once the worker exits.
		if w := m.view().goSent; w != nil && w != m.goSeen && !w.proc.(*fakeProcess).exited() {
			if err := w.proc.(*fakeProcess).awaitGo(waitBound); err != nil {
				m.t.Fatal(err)
			}
			m.goSeen = w
		}
		return
	}
}

// waitFor waits, bounded, until cond holds (called with m.mu held) or Run
// has returned.
func (m *machine) waitFor(what string, cond func() bool) {
	m.t.Helper()
	deadline := time.NewTimer(waitBound)
	defer deadline.Stop()
	for {
		m.mu.Lock()
		ok := cond()
		m.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-m.changed:
		case <-m.s.done:
			return
		case <-deadline.C:
			m.t.Fatalf("%s: not within %v", what, waitBound)
		}
	}
}

// sync asks for the status, ordered after every event sent before, and
// waits until the loop has also taken its view after it.
func (m *machine) sync() (Status, bool) {
	m.t.Helper()
	reply := make(chan Status, 1)
	if !m.s.send(statusRequest{reply: reply}) {
		return Status{}, false
	}
	st := <-reply
	m.waitFor("the view after a status request", func() bool { return m.synced == reply })
	return st, true
}

func (m *machine) status() Status {
	m.t.Helper()
	st, ok := m.sync()
	if !ok {
		m.t.Fatal("Run has returned")
	}
	return st
}

// wait returns Run's result, waiting for it (bounded) the first time.
func (m *machine) wait() error {
	m.t.Helper()
	if m.ran == nil {
		select {
		case err := <-m.runErr:
			m.ran = &err
		case <-time.After(waitBound):
			m.t.Fatalf("Run did not return within %v", waitBound)
		}
	}
	return *m.ran
}

// close stops the supervisor: the running successor fails, every worker
// exits; then the fakes must be left as they should.
func (m *machine) close() {
	t := m.t
	for i := 0; ; i++ {
		for _, inFlight := m.procs.held(); inFlight > 0; _, inFlight = m.procs.held() {
			m.answerSuccessor(errors.New("fake: the test is over"))
		}
		m.s.Stop()
		if _, ok := m.sync(); !ok {
			break
		}
		if i == 3 {
			t.Fatal("Run goes on after the stop and every worker's exit")
		}
		for _, p := range m.procs.all() {
			p.exit(exitStatus(0))
		}
		m.settle()
	}
	if err := m.wait(); err != nil {
		t.Errorf("Run: %v", err)
	}
	// Run leaves the binaries it held and the fd store to the process's
	// exit, which follows it in the supervisor; hundreds of cases in one
	// process close them.
	for e := range m.exes {
		e.close()
	}
	m.s.clearStore()
	m.checkFakes()
	(&harness{t: t, logs: m.logs}).dumpLogs()
}

// checkFakes: invariants held after every event, successors never
// overlapped, every hold on orphans was released, no worker was told to
// drain twice, and what each worker left behind was killed.
func (m *machine) checkFakes() {
	t := m.t
	m.mu.Lock()
	for _, v := range m.violations {
		t.Errorf("invariant: %s", v)
	}
	m.mu.Unlock()
	f := m.procs
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.holds != f.releases || f.overlaps > 0 || f.closes != 1 {
		t.Errorf("HoldOrphans: %d holds, %d released, %d while another was held; Close called %d times",
			f.holds, f.releases, f.overlaps, f.closes)
	}
	for _, p := range f.procs {
		p.mu.Lock()
		if p.groupKilled == 0 {
			t.Errorf("%v: its process group was not killed after it exited", p)
		}
		drains := 0
		for _, sig := range p.signals {
			if sig == syscall.SIGTERM {
				drains++
			}
		}
		if drains > 1+p.failedSaves {
			t.Errorf("%v: told to drain %d times", p, drains)
		}
		p.mu.Unlock()
	}
}
