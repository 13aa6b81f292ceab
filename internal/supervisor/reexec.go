package supervisor

import (
	"fmt"
	"os"
	"time"

	"github.com/procswitch/supervisor/internal/history"
	"github.com/procswitch/supervisor/internal/notify"
	"github.com/procswitch/supervisor/internal/proc"
	"golang.org/x/sys/unix"
)

// A re-exec in place, as systemd's daemon-reexec: the supervisor writes
// its state into an Image, execs its own (new) binary with the Image and
// every fd it names kept open, and the new image adopts the workers, which
// are still its children, and serves on: same PID, same workers, same
// sockets, same fd store. Nothing restarts; a container whose PID 1 this is
// lives on, and systemd's MainPID does not change.
//
// It is taken only from a quiet state: serving, every slot of the current
// generation with a ready worker, no other generation. Standbys are ended
// first (the new image starts new ones). Before the image is made, every
// notify socket gets a marker and the loop handles what was queued before
// it; the readers stop at the marker, so what workers send afterwards
// waits in the sockets, which the new image reads on. Reaping is frozen
// from the image to the exec, so a worker that exits meanwhile stays a
// zombie for the new image to reap.

// ImageVersion is the layout of Image; a binary refuses another (its
// check mode says which it reads, before the exec is tried).
const ImageVersion = 1

// Image is the engine's state across a re-exec.
type Image struct {
	Version         int            `json:"version"`
	LastGen         int            `json:"last_gen"`
	Gen             ImageGen       `json:"gen"`
	Held            []ImageHeld    `json:"held"`
	Store           []ImageFD      `json:"store"`
	StoreLastID     uint64         `json:"store_last_id"`
	LastUpgrade     *UpgradeStatus `json:"last_upgrade,omitempty"`
	LastSelfUpgrade *UpgradeStatus `json:"last_self_upgrade,omitempty"`
	LastReload      *UpgradeStatus `json:"last_reload,omitempty"`
	Began           time.Time      `json:"began"` // the re-exec was asked for
	// FellBack, set by the image that takes the state over (not passed):
	// the new binary could not, and this is the previous one executed
	// again; why. The self-upgrade is then recorded as failed.
	FellBack string `json:"-"`
}

// ImageGen is the serving generation.
type ImageGen struct {
	N          int           `json:"n"`
	Binary     string        `json:"binary"`
	Version    string        `json:"version,omitempty"`
	Started    time.Time     `json:"started"`
	ReadyMS    float64       `json:"ready_ms"`
	Trigger    string        `json:"trigger,omitempty"`
	From       int           `json:"from,omitempty"`
	Held       int           `json:"held"` // its binary: an index in Held; -1 for its own fd in ExeFD
	ExeFD      int           `json:"exe_fd"`
	NotifyFD   int           `json:"notify_fd"`
	NotifyPath string        `json:"notify_path"`
	Workers    []ImageWorker `json:"workers"`
}

// ImageWorker is a ready worker of the serving generation.
type ImageWorker struct {
	Slot        int       `json:"slot"`
	PID         int       `json:"pid"`
	Started     time.Time `json:"started"`
	ReadyAt     time.Time `json:"ready_at"`
	Status      string    `json:"status,omitempty"`
	Version     string    `json:"version,omitempty"`
	Restarts    int       `json:"restarts,omitempty"`
	Crashes     int       `json:"crashes,omitempty"`
	FreeRestart bool      `json:"free_restart,omitempty"`
	LiveStore   bool      `json:"live_store,omitempty"`
}

// ImageHeld is a held binary (versions.go).
type ImageHeld struct {
	FD      int       `json:"fd"`
	Binary  string    `json:"binary"`
	Gens    []int     `json:"gens"`
	Version string    `json:"version,omitempty"`
	Since   time.Time `json:"since"`
	Bad     string    `json:"bad,omitempty"`
}

// ImageFD is an fd of the live store.
type ImageFD struct {
	Name   string `json:"name"`
	FD     int    `json:"fd"`
	ID     uint64 `json:"id"`
	Socket bool   `json:"socket,omitempty"`
	NoPoll bool   `json:"no_poll,omitempty"`
}

// FDs are the fds the image names: they must stay open across the exec.
func (img *Image) FDs() []int {
	fds := []int{img.Gen.NotifyFD}
	if img.Gen.ExeFD >= 0 {
		fds = append(fds, img.Gen.ExeFD)
	}
	for _, h := range img.Held {
		fds = append(fds, h.FD)
	}
	for _, e := range img.Store {
		fds = append(fds, e.FD)
	}
	return fds
}

// Reexec is Config.Reexec: it execs the new image with img and returns
// only if that failed.
type Reexec func(img *Image) error

// reexecKey marks the supervisor's own datagram on a notify socket that
// says every datagram before it has been read (a re-exec waits for it).
const reexecKey = "X_SUPERVISOR_REEXEC"

// reexecQuiesce bounds the wait for the notify markers and the standbys'
// exits before a re-exec.
const reexecQuiesce = 10 * time.Second

// ReexecInPlace asks for a re-exec in place (Config.Reexec). The channel
// receives a failure; on success this process is another image, which
// records the result.
func (s *Supervisor) ReexecInPlace() <-chan Result {
	return s.request(func(reply chan Result) any { return reexecRequest{reply: reply} })
}

type reexecRequest struct{ reply chan Result }

// reexecRefusal says why no re-exec can be taken now, or nil.
func (s *Supervisor) reexecRefusal() error {
	g := s.current
	switch {
	case s.cfg.Reexec == nil:
		return fmt.Errorf("this supervisor does not re-execute itself")
	case s.state != stateServing && s.state != stateProbation:
		return fmt.Errorf("the supervisor is %s: send it again once it serves", s.state)
	case len(s.gens) != 1 || g == nil || s.gens[0] != g:
		return fmt.Errorf("an older generation is still draining: send it again once it has exited")
	case len(s.store) > 0:
		return fmt.Errorf("connections handed over are still held")
	}
	for _, sl := range g.slots {
		if sl.worker == nil || !sl.worker.ready {
			return fmt.Errorf("worker slot %d of generation %d has no ready worker (a restart is due): send it again once it serves", sl.index, g.n)
		}
	}
	return nil
}

// onReexecRequest quiesces, makes the image and execs; it returns only
// when the re-exec was refused or failed, and the supervisor serves on.
func (s *Supervisor) onReexecRequest(reply chan Result) {
	began := time.Now()
	fail := func(kind Kind, err error) {
		s.refuseSelfUpgrade(kind, err.Error())
		reply <- Result{Err: &UpgradeError{Kind: kind, Reason: err.Error(), SelfUpgrade: true}}
	}
	if s.reexecing { // asked again while this one quiesces (dispatched from there)
		fail(KindRefused, fmt.Errorf("a re-exec in place is already under way"))
		return
	}
	if err := s.reexecRefusal(); err != nil {
		fail(KindRefused, err)
		return
	}
	g := s.current
	s.reexecing = true
	defer func() { s.reexecing = false }()
	s.endStandbys(g)
	stopped, err := s.quiesceNotify(g)
	if err == nil {
		err = s.reexecRefusal() // what happened meanwhile; no standby starts while reexecing
	}
	if err != nil {
		if stopped {
			go s.readNotify(g)
		}
		fail(KindRefused, err)
		return
	}
	for _, p := range s.unhashed { // the new image hashes only its own: written as they are
		s.write(p.rec)
	}
	s.unhashed = nil
	release := s.procs.Freeze()
	for _, sl := range g.slots { // an exit reaped before the freeze would be lost to the new image
		select {
		case <-sl.worker.proc.Done():
			release()
			go s.readNotify(g)
			fail(KindRefused, fmt.Errorf("worker %d exited meanwhile: send it again once it is restarted", sl.worker.pid()))
			return
		default:
		}
	}
	s.endProbation("the supervisor re-executes itself") // if on probation, as a fork self-upgrade does; kept until now for a crash meanwhile
	img := s.image(began)
	s.log.Info().Int("gen", g.n).Ints("pids", g.pids()).Int("fd_store", s.live.n).Msg("re-exec in place: executing the new image")
	err = s.cfg.Reexec(img)
	release()
	go s.readNotify(g)
	fail(KindStartFailed, fmt.Errorf("re-exec: %w", err))
}

// HoldOrphans makes the engine's reaper leave alone every process it did
// not start until release: a child of the caller's own, such as a new
// binary run in check mode, which the caller waits for.
func (s *Supervisor) HoldOrphans() (release func()) { return s.procs.HoldOrphans() }

// RefuseSelfUpgrade records a self-upgrade refused before the engine was
// asked, such as a new binary that failed its check: in the status, the
// log, the history and the metrics, as the engine's own refusals.
func (s *Supervisor) RefuseSelfUpgrade(kind Kind, reason string) {
	s.send(selfUpgradeRefusedEvent{kind: kind, reason: reason})
}

type selfUpgradeRefusedEvent struct {
	kind   Kind
	reason string
}

// refuseSelfUpgrade is a failed or refused re-exec: this image serves on.
func (s *Supervisor) refuseSelfUpgrade(kind Kind, reason string) {
	s.lastSelfUpgrade = &UpgradeStatus{OK: false, At: time.Now(), Kind: string(kind), Reason: reason}
	msg := "re-exec in place failed; this image serves on"
	if kind == KindRefused || kind == KindNotExecutable {
		msg = "re-exec in place refused: this image serves on"
	}
	s.log.Error().Str("result", "failed").Str("kind", string(kind)).Str("reason", reason).Msg(msg)
	s.record(history.Record{Event: history.EventSelfUpgrade, Trigger: history.TriggerSIGUSR2, Gen: s.lastGen,
		Result: history.ResultFailed, Kind: string(kind), Reason: reason})
}

// quiesceNotify handles every event until the standbys have been reaped,
// then sends a marker to g's notify socket and handles every event until
// the reader has passed it; the reader stops there (stopped). Events
// handled meanwhile may change the state, which the caller checks again.
func (s *Supervisor) quiesceNotify(g *generation) (stopped bool, err error) {
	timeout := time.NewTimer(reexecQuiesce)
	defer timeout.Stop()
	for s.standbys > 0 {
		select {
		case ev := <-s.events:
			s.dispatch(ev)
		case <-timeout.C:
			return false, fmt.Errorf("re-exec: %d standby worker(s) did not exit within %v", s.standbys, reexecQuiesce)
		}
	}
	sent := make(chan error, 1)
	go func() { sent <- g.notify.Send(reexecKey + "=" + itoa(g.n)) }() // not on the loop: the reader may wait for it
	for {
		select {
		case ev := <-s.events:
			if n, ok := ev.(notifyEvent); ok && n.gen == g && n.msg.PID == os.Getpid() && n.msg.Vars[reexecKey] != "" {
				return true, nil
			}
			s.dispatch(ev)
		case err := <-sent:
			if err != nil {
				return false, fmt.Errorf("re-exec: %w", err)
			}
			sent = nil
		case <-timeout.C:
			return false, fmt.Errorf("re-exec: the notify socket's reader did not reach the marker within %v", reexecQuiesce)
		}
	}
}

// image is the state the new image needs. The loop is quiet: no reader
// runs, reaping is frozen.
func (s *Supervisor) image(began time.Time) *Image {
	g := s.current
	img := &Image{Version: ImageVersion, LastGen: s.lastGen, StoreLastID: s.live.lastID, Began: began,
		LastUpgrade: s.lastUpgrade, LastSelfUpgrade: s.lastSelfUpgrade, LastReload: s.lastReload}
	img.Gen = ImageGen{N: g.n, Binary: g.binary, Version: g.version, Started: g.started, ReadyMS: ms(g.readyTime),
		Trigger: g.trigger, From: g.from, Held: -1, ExeFD: -1, NotifyFD: g.notify.FD(), NotifyPath: g.notify.Path()}
	for i, h := range s.held {
		img.Held = append(img.Held, ImageHeld{FD: h.exe.fd, Binary: h.binary, Gens: h.gens, Version: h.version,
			Since: h.since, Bad: h.bad})
		if h.exe == g.exe {
			img.Gen.Held = i
		}
	}
	if img.Gen.Held < 0 && g.exe != nil {
		img.Gen.ExeFD = g.exe.fd
	}
	for _, sl := range g.slots {
		w := sl.worker
		img.Gen.Workers = append(img.Gen.Workers, ImageWorker{Slot: sl.index, PID: w.pid(), Started: w.proc.StartTime(),
			ReadyAt: w.readyAt, Status: w.status, Version: w.version, Restarts: sl.restarts, Crashes: sl.crashes,
			FreeRestart: sl.freeRestart, LiveStore: w.liveStore})
	}
	for _, e := range s.live.list(nil) {
		img.Store = append(img.Store, ImageFD{Name: e.name, FD: e.fd, ID: e.id, Socket: e.socket, NoPoll: e.noPoll})
	}
	return img
}

// adoptees are the image's workers, for the reaper.
func (img *Image) adoptees() []proc.Adoptee {
	var a []proc.Adoptee
	for _, w := range img.Gen.Workers {
		a = append(a, proc.Adoptee{PID: w.PID, Started: w.Started})
	}
	return a
}

// restore takes the state over from img in the new image (New), with the
// reaper that adopted its workers.
func (s *Supervisor) restore(img *Image, r *proc.Reaper) error {
	if img.Version != ImageVersion {
		return fmt.Errorf("re-exec: the previous image wrote layout %d, this binary reads %d", img.Version, ImageVersion)
	}
	s.lastGen, s.lastUpgrade, s.lastSelfUpgrade, s.lastReload = img.LastGen, img.LastUpgrade, img.LastSelfUpgrade, img.LastReload
	for _, h := range img.Held {
		exe, err := executableFromFD(h.FD)
		if err != nil {
			return err
		}
		s.held = append(s.held, &held{exe: exe, binary: h.Binary, gens: h.Gens, version: h.Version, since: h.Since, bad: h.Bad})
	}
	for _, e := range img.Store {
		s.live.byName[e.Name] = append(s.live.byName[e.Name], len(s.live.entries))
		s.live.entries = append(s.live.entries, liveFD{name: e.Name, fd: e.FD, id: e.ID, socket: e.Socket, noPoll: e.NoPoll})
		unix.CloseOnExec(e.FD)
	}
	s.live.n, s.live.lastID = len(img.Store), img.StoreLastID
	ig := img.Gen
	sock, err := notify.FromFD(ig.NotifyFD, ig.NotifyPath)
	if err != nil {
		return fmt.Errorf("re-exec: generation %d's notify socket: %w", ig.N, err)
	}
	g := &generation{n: ig.N, binary: ig.Binary, version: ig.Version, started: ig.Started, phase: serving, notify: sock,
		readyTime: time.Duration(ig.ReadyMS * float64(time.Millisecond)), trigger: ig.Trigger, from: ig.From, everReady: true}
	switch {
	case ig.Held >= 0 && ig.Held < len(s.held):
		g.exe = s.held[ig.Held].exe
	case ig.ExeFD >= 0:
		if g.exe, err = executableFromFD(ig.ExeFD); err != nil {
			return err
		}
	}
	g.slots = make([]*slot, s.cfg.Workers)
	for i := range g.slots {
		g.slots[i] = &slot{index: i}
	}
	for _, iw := range ig.Workers {
		if iw.Slot < 0 || iw.Slot >= len(g.slots) || g.slots[iw.Slot].worker != nil {
			return fmt.Errorf("re-exec: worker %d in slot %d of %d: was --workers changed?", iw.PID, iw.Slot, len(g.slots))
		}
		sl := g.slots[iw.Slot]
		sl.restarts, sl.crashes, sl.freeRestart = iw.Restarts, iw.Crashes, iw.FreeRestart
		p := r.Adopted(iw.PID)
		w := &worker{gen: g, slot: sl, proc: p, ready: true, readyAt: iw.ReadyAt, lastPing: time.Now(), status: iw.Status,
			version: iw.Version, liveStore: iw.LiveStore, cancel: func() {}}
		w.readyTimer = time.AfterFunc(time.Hour, func() {})
		w.readyTimer.Stop()
		sl.worker = w
		s.watchExit(w)
		if s.cfg.Watchdog > 0 {
			time.AfterFunc(s.cfg.Watchdog, func() { s.send(watchdogEvent{w: w}) })
		}
	}
	for _, sl := range g.slots {
		if sl.worker == nil {
			return fmt.Errorf("re-exec: no worker for slot %d: was --workers changed?", sl.index)
		}
	}
	s.current, s.gens, s.state = g, []*generation{g}, stateServing
	s.hashBinary(g) // if the previous image had not yet
	s.readyOnce.Do(func() { close(s.readyCh) })
	go s.readNotify(g)
	took := time.Since(img.Began)
	if img.FellBack != "" {
		reason := img.FellBack + "; the previous binary was executed again and serves on, its workers adopted"
		s.lastSelfUpgrade = &UpgradeStatus{Gen: g.n, OK: false, At: time.Now(), Kind: string(KindStartFailed), Reason: reason}
		s.log.Error().Int("gen", g.n).Ints("pids", g.pids()).Int("fd_store", s.live.n).Float64("took_ms", ms(took)).
			Str("result", "failed").Str("kind", string(KindStartFailed)).Str("reason", reason).
			Msg("re-exec in place failed: the previous binary serves on, its workers adopted")
		s.record(history.Record{Event: history.EventSelfUpgrade, Trigger: history.TriggerSIGUSR2, Gen: g.n, Binary: g.binary,
			Result: history.ResultFailed, Kind: string(KindStartFailed), Reason: reason})
		return nil
	}
	s.lastSelfUpgrade = &UpgradeStatus{Gen: g.n, OK: true, At: time.Now(), ReadyMS: ms(took)}
	s.log.Info().Int("gen", g.n).Ints("pids", g.pids()).Int("fd_store", s.live.n).Float64("took_ms", ms(took)).
		Str("result", "ok").Msg("re-exec in place: the new image serves, its workers adopted")
	s.record(history.Record{Event: history.EventSelfUpgrade, Trigger: history.TriggerSIGUSR2, Gen: g.n, Binary: g.binary,
		Version: g.version, Result: history.ResultOK, ReadyMS: ms(took), Reason: "re-exec in place"})
	return nil
}
