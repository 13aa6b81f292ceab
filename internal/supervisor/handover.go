package supervisor

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/procswitch/supervisor/internal/contract"
	"github.com/procswitch/supervisor/internal/fdbatch"
	"github.com/procswitch/supervisor/internal/ready"
	"golang.org/x/sys/unix"
)

// Handover mode, for stateful workers (data separated from logic):
//
//  1. The new worker starts ahead, with a handover connection, initialises
//     and says WAITING on it. The old one serves meanwhile.
//  2. The old worker gets the drain signal: it stops serving, saves its state
//     to the snapshot file, hands its connections to the supervisor's fd store
//     (FDSTORE=1, FDNAME=…) and says HANDOVER=saved. The blackout begins.
//  3. The supervisor passes the stored connections to the new worker and says
//     GO: it restores from the snapshot and sends READY=1. The blackout ends.
//  4. If the new worker fails after GO, the old binary is started again,
//     cold, with the same snapshot and connections: a rollback.

// stored is a connection in the fd store.
type stored struct {
	name string
	fd   int
}

// handoverConn is the supervisor's end of a new worker's handover connection.
type handoverConn struct {
	conn *net.UnixConn
}

// newHandoverConn makes the socket pair; the returned fd is the worker's end,
// to be passed and then closed.
func newHandoverConn() (*handoverConn, int, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, -1, fmt.Errorf("handover connection: %w", err)
	}
	f := os.NewFile(uintptr(fds[0]), "handover")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		unix.Close(fds[1])
		return nil, -1, fmt.Errorf("handover connection: %w", err)
	}
	return &handoverConn{conn: c.(*net.UnixConn)}, fds[1], nil
}

// handover is an upgrade in handover mode past the new worker's WAITING.
type handover struct {
	next    *worker     // the new worker, started ahead
	old     *generation // the generation handing over
	began   time.Time   // the old one was told to save: the blackout begins
	saved   bool        // the old one said HANDOVER=saved, or died trying
	goSent  bool
	crashed bool   // the old worker died before it saved, its state kept elsewhere: CRASHED before GO
	lost    string // what players lost: the old worker died or hung while saving
	cutover string // the cutover snapshot kept for probation, if any

	oldPIDs []int // the old generation's workers, for the log
}

// readWaiting tells the loop when the worker says it is initialised.
func (s *Supervisor) readWaiting(w *worker) {
	buf := make([]byte, 256)
	n, err := w.handover.conn.Read(buf)
	if err == nil && strings.TrimSpace(string(buf[:n])) == contract.HandoverWaiting {
		s.send(waitingEvent{w: w})
	}
}

// onWaiting: the new worker is initialised; tell the old one to hand over.
func (s *Supervisor) onWaiting(w *worker) {
	if s.state != stateUpgrading || w.gen != s.next || w.slot.worker != w {
		return
	}
	w.handover.growFDTable()
	h := &handover{next: w, old: s.current, began: time.Now(), oldPIDs: s.current.pids()}
	s.handover = h
	s.setState(stateSaving)
	w.readyToken++ // saving is bounded by the drain timeout; GO re-arms the ready timeout
	if h.old.alive() == 0 {
		s.onSaved(h.old, "no worker was running: the snapshot is restored as it is")
		return
	}
	s.log.Info().Int("gen", w.gen.n).Int("old_gen", h.old.n).Ints("old_pids", h.old.pids()).
		Msg("handover: new worker initialised, old one saving")
	for _, sl := range h.old.slots {
		if ow := sl.worker; ow != nil && !ow.ready && s.cfg.Ready.Mode == ready.Notify {
			// Still starting (a restart after a crash, or a first start):
			// it has not said READY=1, so it serves nobody yet and has
			// nothing to save, and a drain signal could find it without
			// its handlers, or half through taking the state over. It
			// ends as its predecessor did; the new worker takes over on a
			// crash restart's terms (onHandingWorkerExit). A READY=1 still
			// queued behind other messages is seen before its exit: the
			// exit is then reported as a death while saving.
			s.log.Warn().Int("gen", h.old.n).Int("pid", ow.pid()).
				Msg("handover: the old generation's worker was still starting (not ready): stopped, it has nothing to save")
			ow.proc.Kill()
		}
	}
	s.drain(h.old)
}

// fdTableRoom is how many fds growFDTable makes room for, at most: a
// power of two, the sizes the kernel's table takes.
const fdTableRoom = 1 << 16

// growFDTable grows the supervisor's fd table before a handover, while the
// old worker still serves, by duplicating the handover connection's fd to a
// high number and closing it: the kernel grows a multithreaded process's
// table only after an RCU grace period, milliseconds each time it doubles,
// which would otherwise fall into the blackout as the stored connections
// arrive. The table never shrinks: only the first handover pays. 64k
// entries take 512 KiB.
func (h *handoverConn) growFDTable() {
	var lim unix.Rlimit
	rc, err := h.conn.SyscallConn()
	if err != nil || unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) != nil || lim.Cur < 2 {
		return
	}
	rc.Control(func(fd uintptr) {
		if high, err := unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, int(min(lim.Cur, fdTableRoom)-1)); err == nil {
			unix.Close(high)
		}
	})
}

// onWorkerSaved: a worker said HANDOVER=saved.
func (s *Supervisor) onWorkerSaved(from *worker) {
	if h := s.handover; h != nil && from.gen == h.old && !h.saved {
		s.log.Info().Int("gen", h.next.gen.n).Int("stored_fds", len(s.store)).
			Float64("save_ms", ms(time.Since(h.began))).Msg("handover: snapshot saved")
	}
	s.onSaved(from.gen, "")
}

// onHandingWorkerExit: a worker of a draining generation exited. If it was
// saving and had not said it saved, its torn snapshot never replaced the
// last complete one, which is restored instead; unless, in an upgrade, it
// had not said READY=1 yet, or it kept its state and its connections in
// the live fd store, which the new worker gets: then the handover goes on
// on a crash restart's terms (CRASHED before GO), nothing lost.
func (s *Supervisor) onHandingWorkerExit(old *worker) {
	saving := s.handover != nil && old.gen == s.handover.old && !s.handover.saved ||
		s.self != nil && s.self.asked && old.gen == s.self.old && !s.self.saved
	if !saving {
		return
	}
	age := s.snapshotAge()
	lost := "the old worker died while saving"
	if old.gen.killed > 0 {
		lost = "the old worker did not save within the drain timeout (" + s.cfg.DrainTimeout.String() + ") and was killed"
	}
	if h := s.handover; h != nil {
		switch {
		case !old.ready && s.cfg.Ready.Mode == ready.Notify:
			// Stopped by onWaiting, or died, before READY=1 (seen before
			// its exit, which comes through the notify socket): it served
			// nobody, so what the new worker restores is what it had.
			h.crashed = true
			s.onSaved(old.gen, "the old worker had not served yet (it was starting): "+age)
			return
		case old.liveStore && s.live.holdsState():
			// It kept its connections and its state (an fd that is not a
			// socket) in the live store, which the new worker gets: a
			// crash restart's terms.
			h.crashed = true
			s.log.Warn().Int("gen", old.gen.n).Int("pid", old.pid()).Int("stored_fds", s.live.n).
				Msg("handover: " + lost + "; it kept its connections and its state in the live fd store, which the new worker gets, as a worker restarted after a crash does (CRASHED, then GO)")
			s.onSaved(old.gen, "")
			return
		}
	}
	if fi, err := os.Stat(s.cfg.SnapshotPath); err != nil {
		lost += ": no snapshot exists, so the new worker started empty"
	} else {
		lost += ": the last complete snapshot, " + time.Since(fi.ModTime()).Round(time.Millisecond).String() + " old, was restored"
	}
	if old.liveStore || s.live.n > 0 {
		lost += ", with the connections it kept in the live fd store"
	} else if len(s.store) == 0 {
		lost += ", and its connections were dropped (it stored none)"
	} else {
		lost += ", with the " + itoa(len(s.store)) + " connections it had stored"
	}
	if s.handover != nil {
		s.handover.lost = lost
		s.log.Error().Int("gen", old.gen.n).Int("pid", old.pid()).Str("lost", lost).
			Msg("handover: old worker died while saving; using the last complete snapshot")
	} else {
		s.self.lost = lost
	}
	s.onSaved(old.gen, age)
}

// onSaveFailed: the old worker could not save (HANDOVER=failed) and goes
// on serving on its connections: the upgrade or self-upgrade fails with
// kind save-failed, and nobody is disconnected.
func (s *Supervisor) onSaveFailed(w *worker, reason string) {
	if reason == "" {
		reason = "the worker gave no reason"
	}
	switch {
	case s.handover != nil && w.gen == s.handover.old && !s.handover.saved:
		h := s.handover
		s.handover = nil
		s.clearStore() // the worker keeps its own
		s.undrain(h.old)
		s.log.Error().Int("gen", h.old.n).Int("pid", w.pid()).Str("reason", reason).
			Msg("handover: the old worker could not save; it goes on serving")
		if s.state == stateRollingBack { // the new worker failed first; that is reported already
			s.setState(stateServing)
			s.startQueued()
			return
		}
		g := s.next
		s.next = nil
		g.phase = failed
		s.killGeneration(g)
		s.release(g.exe)
		s.setState(stateServing)
		fail := &UpgradeError{Gen: g.n, Kind: KindSaveFailed,
			Reason: "the old worker could not save its state (" + reason + "): it goes on serving, nobody was disconnected"}
		s.log.Error().Int("gen", g.n).Str("binary", g.binary).Str("kind", string(fail.Kind)).Str("reason", fail.Reason).
			Str("result", "failed").Msg("upgrade failed")
		s.reapGeneration(g)
		s.finishUpgrade(g, Result{Gen: g.n, Err: fail})
	case s.state == stateSelfUpgrading && s.cfg.Handover && s.self.asked && w.gen == s.self.old && !s.self.saved:
		ss := s.self
		s.self = nil
		s.clearStore()
		s.undrain(ss.old)
		ss.answerHandOver(handOverResult{err: fmt.Errorf("the worker could not save its state (%s): it goes on serving", reason)})
		s.setState(stateServing)
		s.finishSelfUpgrade(ss.reply, &UpgradeError{Kind: KindSaveFailed, SelfUpgrade: true,
			Reason: "the worker could not save its state (" + reason + "): it goes on serving, nobody was disconnected"})
		if ss.stopAfter {
			s.stopAll()
		}
	case s.cfg.Handover && w.gen.phase == draining && (s.state == stateStopping || s.state == stateRetired) && w.slot.worker == w:
		// Told to drain for good, it cannot save, and would serve on until
		// the drain timeout: end it now. Players lose what happened since
		// the last complete snapshot, which the log names.
		s.log.Error().Int("gen", w.gen.n).Int("pid", w.pid()).Str("reason", reason).
			Str("snapshot", s.snapshotAge()).
			Msg("stopping: the worker could not save its state; killing it")
		w.proc.Kill()
	}
}

// sendGo passes the stored connections to the new worker and says GO.
func (s *Supervisor) sendGo(h *handover, note string) {
	if h.goSent {
		return
	}
	h.goSent = true
	w := h.next
	w.goSent = true
	dropped := s.dropHungUp()
	w.readyToken++ // the ready timeout counts again from GO
	token := w.readyToken
	time.AfterFunc(s.cfg.ReadyTimeout, func() { s.send(readyTimeoutEvent{w: w, token: token}) })
	if note != "" {
		s.log.Warn().Int("gen", w.gen.n).Str("note", note).Msg("handover: restoring")
	}
	store := append(s.liveForStart(notIn(w.prepassed)), s.store...)
	gone := s.live.goneSince(w.prepassed)
	began := time.Now()
	go func() {
		send := w.handover.sendStore
		if h.crashed {
			send = w.handover.sendCrashed // a restart's terms: its predecessor died mid-command
		}
		if err := send(store, gone, s.cfg.PassTimeout); err != nil {
			s.send(passFailedEvent{w: w, err: err})
			return
		}
		s.log.Info().Int("gen", w.gen.n).Int("connections", len(store)).Int("dropped", dropped).
			Float64("pass_ms", ms(time.Since(began))).Msg("handover: connections passed, GO sent")
	}()
}

// onPassFailed: the connections could not be passed to the new worker: the
// upgrade fails at once, rather than at the ready timeout.
func (s *Supervisor) onPassFailed(w *worker, err error) {
	if w.gen == s.current && !w.gen.ahead && w.slot.worker == w && w.goSent && !w.ready {
		// A standby promoted after a crash (standby.go): kill it, and its
		// exit restarts the slot, rather than waiting for the ready timeout.
		s.log.Error().Int("gen", w.gen.n).Int("pid", w.pid()).Err(err).Msg("standby: passing the connections failed; killing it")
		w.proc.Kill()
		return
	}
	if w.gen == s.current && w.gen.ahead && w.slot.worker == w {
		s.failAhead(w.gen, "passing the connections to worker "+strconv.Itoa(w.pid())+": "+err.Error())
		return
	}
	if w.gen != s.next || w.slot.worker != w {
		return
	}
	s.onNextFailed(w.gen, KindPassFailed, "passing the connections to worker "+strconv.Itoa(w.pid())+": "+err.Error())
}

// sendStore writes the fds in batches, the names of fds passed at start
// that are gone since, then GO. The store's fds are ours until a
// generation is ready on them; the worker gets duplicates.
func (h *handoverConn) sendStore(store []stored, gone []string, timeout time.Duration) error {
	return h.sendStoreThen(store, gone, timeout, contract.HandoverGo)
}

// sendCrashed is sendStore for a standby promoted after the worker crashed:
// CRASHED before GO.
func (h *handoverConn) sendCrashed(store []stored, gone []string, timeout time.Duration) error {
	return h.sendStoreThen(store, gone, timeout, contract.HandoverCrashed, contract.HandoverGo)
}

func (h *handoverConn) sendStoreThen(store []stored, gone []string, timeout time.Duration, last ...string) error {
	h.conn.SetWriteDeadline(time.Now().Add(timeout))
	names := make([]string, len(store))
	fds := make([]int, len(store))
	for i, st := range store {
		names[i], fds[i] = st.name, st.fd
	}
	if err := fdbatch.Send(h.conn, contract.HandoverFDsKey, names, fds); err != nil {
		return err
	}
	for len(gone) > 0 { // in messages of at most 32 KiB
		n, size := 0, len(contract.HandoverGoneKey)
		for n < len(gone) && (n == 0 || size+len(gone[n])+1 <= 32<<10) {
			size += len(gone[n]) + 1
			n++
		}
		if _, err := h.conn.Write([]byte(contract.HandoverGoneKey + strings.Join(gone[:n], ":"))); err != nil {
			return err
		}
		gone = gone[n:]
	}
	for _, msg := range last {
		if _, err := h.conn.Write([]byte(msg)); err != nil {
			return err
		}
	}
	return nil
}

// defaultFDName is what systemd names a stored fd that came without a
// valid FDNAME.
const defaultFDName = "stored"

// storeFDs adds the fds of an FDSTORE=1 message to the store (they arrive
// close-on-exec: the net package receives with MSG_CMSG_CLOEXEC). FDNAME
// names them all, as in systemd; or, the supervisor's extension, it lists
// one name per fd, colon-separated: a name systemd refuses, as it refuses
// every ':', so that it cannot be mistaken for one. A list of the wrong
// length is refused as systemd refuses a bad name: the fds are stored under
// the default name.
func (s *Supervisor) storeFDs(w *worker, fdname string, fds []int) {
	names, ok := fdNames(fdname, len(fds))
	if !ok {
		s.log.Warn().Int("pid", w.pid()).Int("fds", len(fds)).Int("names", strings.Count(fdname, ":")+1).
			Msg("FDSTORE=1 with a list of FDNAMEs not one per fd: stored under the default name")
	}
	for i, fd := range fds {
		s.store = append(s.store, stored{name: names[i], fd: fd})
	}
	s.log.Debug().Int("pid", w.pid()).Str("name", names[0]).Int("fds", len(fds)).Msg("fds stored")
}

// dropHungUp closes stored connections whose peer has hung up meanwhile
// (nobody is there to play on them), found by one poll(2) over the whole
// store, and returns how many it closed.
func (s *Supervisor) dropHungUp() int {
	if len(s.store) == 0 {
		return 0
	}
	fds := make([]int, len(s.store))
	for i, st := range s.store {
		fds[i] = st.fd
	}
	gone, err := hungUp(fds)
	if err != nil {
		s.log.Warn().Err(err).Msg("handover: cannot check the stored connections for peers that hung up; passing them all")
		return 0
	}
	kept := s.store[:0]
	for i, st := range s.store {
		if gone[i] {
			unix.Close(st.fd)
			continue
		}
		kept = append(kept, st)
	}
	dropped := len(s.store) - len(kept)
	clear(s.store[len(kept):])
	s.store = kept
	if dropped > 0 {
		s.log.Info().Int("dropped", dropped).Msg("handover: dropped stored connections whose peer hung up")
	}
	return dropped
}

// clearStore closes the supervisor's copies once a generation is ready on
// the stored connections.
func (s *Supervisor) clearStore() {
	for _, st := range s.store {
		unix.Close(st.fd)
	}
	s.store = nil
}

// rollbackRun is a rollback in state rolling-back that the history records
// on its own (one on probation); an upgrade's own rollback is recorded with
// the upgrade.
type rollbackRun struct {
	trigger string
	from    int
	lost    string
	why     string
}

// rollbackRetryEvent retries a rollback whose generation could not be made.
type rollbackRetryEvent struct {
	binary string
	exe    *executable
	from   int
	reason string
	tries  int
}

// rollback starts a previous binary again, cold, on the snapshot and the
// stored connections, as the current generation (state rolling-back). If
// the generation cannot even be made (its notify socket, say), it tries
// again with the crash restarts' back-off: never zero workers in silence.
func (s *Supervisor) rollback(binary string, exe *executable, from int, reason string) {
	s.rollbackTry(rollbackRetryEvent{binary: binary, exe: exe, from: from, reason: reason})
}

func (s *Supervisor) rollbackTry(r rollbackRetryEvent) {
	g, err := s.newGenerationFrom(r.binary, r.exe)
	if err != nil {
		r.tries++
		delay := s.cfg.backoff(r.tries)
		s.log.Error().Err(err).Int("tries", r.tries).Float64("retry_ms", ms(delay)).
			Msg("rollback failed: nothing serves; trying again")
		s.rollbackWaiting = true
		time.AfterFunc(delay, func() { s.send(r) })
		return
	}
	g.rollback, g.from = true, r.from
	if s.rollingBack != nil {
		g.trigger = s.rollingBack.trigger
	}
	if s.current != nil && s.current != g {
		old := s.current
		s.current = nil
		s.reapGeneration(old)
	}
	s.current = g
	s.gens = append(s.gens, g)
	s.log.Warn().Int("gen", g.n).Int("old_gen", r.from).Str("binary", g.binary).Str("reason", r.reason).
		Int("stored_fds", len(s.store)).Msg("rolling back to the previous binary")
	for _, sl := range g.slots {
		if err := s.startWorker(g, sl); err != nil {
			s.log.Error().Err(err).Int("gen", g.n).Msg("rollback start failed: restarting with back-off")
			s.scheduleRestart(g, sl, nil)
		}
	}
}

func (s *Supervisor) onRollbackRetry(r rollbackRetryEvent) {
	if !s.rollbackWaiting || s.state != stateRollingBack {
		return
	}
	s.rollbackWaiting = false
	s.rollbackTry(r)
}

// handoverEnv adds the handover variables to a worker's environment.
func (s *Supervisor) handoverEnv(env []string, handoverFD int) []string {
	env = append(env, contract.EnvMode+"="+contract.ModeHandover, contract.EnvSnapshot+"="+s.cfg.SnapshotPath)
	if handoverFD >= 0 {
		env = append(env, contract.EnvHandoverFD+"="+strconv.Itoa(handoverFD))
	}
	return env
}
