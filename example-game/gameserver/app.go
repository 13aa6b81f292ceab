package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"runtime/debug"
	"time"

	"github.com/procswitch/supervisor/handoff"
	"github.com/procswitch/supervisor/handoff/handover"
)

// goodbyeBound bounds writing the last replies to clients when the server
// stops with no next worker to hand them to.
const goodbyeBound = 2 * time.Second

// app is one worker's life: take over the state, serve, hand it over. The
// state's moves (restore, autosave, handover) are handoff.State's, with the
// game's restore and save as its hooks.
type app struct {
	cfg     config
	log     *log.Logger
	w       *handoff.Worker
	st      *handoff.State
	path    string // the snapshot; "" when nothing is saved
	version string
	pid     int

	rules    *rules // the game's logic, in Lua; guarded by world.mu once the world exists
	world    *world
	srv      *server
	restored *restored // nil when nothing was restored

	loaded  time.Duration   // how long reading the snapshot took
	handing []sessionRecord // the sessions a handover saves
	saveDur time.Duration   // how long the last handover or shutdown save took

	liveErr   error               // --live: why the region could not be made or read
	region    *os.File            // --live: the stored region, when passed at start
	pre       *prepared           // --live: the world read from it ahead
	ahead     map[string]*session // --live: the sessions made ahead of the takeover, by connection name (prepareSessions)
	prepared  chan struct{}       // --live, a cold start: closed once pre is set (prepareLive)
	standby   bool                // the supervisor's --standby: this worker waits for GO with no time limit
	autosaved uint64              // the world's change count last autosaved; the autosaves' own
	spare     []player            // the autosaves' copy of the player table, reused
}

// errCalledOff means the worker was stopped, or its handover called off,
// before it began to serve: it exits without doing anything.
var errCalledOff = errors.New("stopped before it began to serve")

// serve runs the worker until it has handed over or shut down.
func serve(cfg config, logger *log.Logger) error {
	rules, err := loadRules(scripts{dir: cfg.scripts})
	if err != nil {
		return err
	}
	defer rules.close()
	logger.Printf("scripts %s: %s (%s)", rules.version, rules.from, rules.rule)
	w, err := handoff.New()
	if err != nil {
		return err
	}
	defer w.Close()
	ln, err := w.Listen(cfg.socketName, "tcp", cfg.listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	a := &app{cfg: cfg, log: logger, w: w, version: cleanVersion(version), pid: os.Getpid(), rules: rules,
		standby: handover.Standby()}
	a.path = a.snapshotPath()
	a.st = &handoff.State{
		Worker:   w,
		Path:     a.path,
		Autosave: cfg.autosave,
		Restore:  a.restore,
		Check:    checkSnapshot,
		Resume:   a.resumeAll,
		Save:     a.save,
		Logf:     logger.Printf,
		Live:     cfg.live,
	}
	if cfg.live && !handover.Enabled() {
		return errors.New("--live needs the supervisor's handover mode (supervisor --mode handover)")
	}
	if cfg.live {
		a.st.Prepare = a.prepareSessions
		a.prepareLive()
	}
	err = a.start()
	if err == nil {
		err = a.liveErr
	}
	if errors.Is(err, errCalledOff) {
		logger.Printf("%v; exiting", err)
		return nil
	}
	if err != nil {
		return err
	}
	return a.run(ln)
}

// snapshotPath is the supervisor's snapshot path, else --snapshot.
func (a *app) snapshotPath() string {
	p := handover.SnapshotPath()
	if p != "" && a.cfg.snapshot != "" && p != a.cfg.snapshot {
		a.log.Printf("--snapshot %s ignored: the supervisor names %s", a.cfg.snapshot, p)
	}
	if p == "" {
		p = a.cfg.snapshot
	}
	return p
}

// start takes over (handoff.State.Start): it waits for the previous
// worker's handover, if this one was started ahead of one, then restores
// the snapshot (restore) and resumes the handed-over sessions (resumeAll).
// It does not accept yet. The drain signal and --handover-wait end the
// wait.
func (a *app) start() error {
	wait := a.cfg.handoverWait
	if a.standby {
		wait = 1<<63 - 1 // a standby waits for its worker's crash, however long
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	// Nothing a restore allocates is garbage: it is the world and its
	// sessions. Collecting while they grow (a cycle each time the heap
	// doubles, from a few MB to the table's size) finds nothing to free, yet
	// takes a fifth of the restore, which is all blackout. The collector
	// runs again once the sessions serve; what is allocated meanwhile is
	// bounded by the snapshot file's size and the connections' number.
	if !a.standby { // a standby waits long, following the region: it collects
		defer debug.SetGCPercent(debug.SetGCPercent(-1))
	}
	err := a.st.Start(ctx)
	switch {
	case errors.Is(err, handoff.ErrHandoverAborted):
		err = fmt.Errorf("%w: %w", errCalledOff, err)
	case errors.Is(err, context.DeadlineExceeded):
		err = fmt.Errorf("the previous worker did not hand over within --handover-wait %v", a.cfg.handoverWait)
	}
	return err
}

// restore is the State's Restore hook: it reads the snapshot at path, if
// there is one, into a new world. The State calls it while the connections
// handed over are still being made ready.
func (a *app) restore(path string) error {
	if a.cfg.live {
		return nil // from the stored region, once every fd is in: resumeAll
	}
	began := time.Now()
	err := a.load(path)
	a.loaded = time.Since(began)
	return err
}

// resumeAll is the State's Resume hook, and says what was restored. After
// a cold start (a rollback, a crash restart) each resumed session is told
// that the server restarted: what it did after the snapshot was lost.
func (a *app) resumeAll(conns []handoff.Conn) {
	if a.cfg.live {
		a.liveErr = a.startLive(conns)
		return
	}
	began := time.Now()
	a.srv.hold() // until READY=1 (run)
	resumed := a.resume(conns, !handover.HandedOver(a.w))
	a.logStart(resumed, a.loaded, time.Since(began))
}

// load reads the snapshot at path, if there is one, into a new world.
func (a *app) load(path string) error {
	var snap snapshot
	if path != "" {
		res, err := readSnapshot(path)
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		if res != nil {
			a.restored, snap = res, res.snapshot
		}
	}
	world, err := newWorld(snap.players, snap.stock, a.rules.goods, a.cfg.stock)
	if err != nil {
		return fmt.Errorf("restore: %s: %w", a.restored.path, err)
	}
	a.world = world
	a.srv = newServer(newGame(world, a.rules, a.version, a.pid), a.log)
	return nil
}

// resume starts serving the handed-over connections, each where its
// session stopped in the previous worker. A connection the snapshot does
// not know (the newest snapshot was refused, and an older one restored) is
// hung up: its session's state is unknown. Every connection is matched
// first, and only then are the sessions started (resumeAll holds them
// until READY=1, server.hold): once running, they run their pending
// commands, and would contend for the world with the matching. With notice (a cold start), each session first writes what the
// previous worker had not written, then noticeRestarted, then runs its
// pending commands.
func (a *app) resume(conns []handoff.Conn, notice bool) (resumed int) {
	recs := make(map[string]sessionRecord, len(conns))
	if a.restored != nil {
		for _, s := range a.restored.sessions {
			recs[s.name] = s
		}
	}
	type match struct {
		conn net.Conn
		rec  sessionRecord
	}
	matched := make([]match, 0, len(conns))
	unknown := 0 // or whose peer left meanwhile
	a.world.mu.Lock()
	for _, c := range conns {
		rec, ok := recs[c.Name]
		if !ok || rec.remote == "" || rec.remote != remoteAddr(c) {
			unknown++
			hangUp(c.Conn)
			continue
		}
		if _, ok := a.world.index[rec.player]; rec.player != "" && !ok {
			rec.player = "" // cannot happen with an intact snapshot
		}
		if notice {
			// After the unwritten output, which ends a line (a write may
			// have stopped in the middle of one).
			rec.out = append(append(rec.out[:len(rec.out):len(rec.out)], noticeRestarted...), '\n')
		}
		matched = append(matched, match{c.Conn, rec})
	}
	a.world.mu.Unlock()
	for _, m := range matched {
		a.srv.add(m.conn, m.rec)
	}
	if unknown > 0 {
		a.log.Printf("hung up %d handed-over connections that the restored snapshot has no session for, or whose peer left", unknown)
	}
	return len(matched)
}

// logStart says what was restored, from where, and how old it is; loaded
// is the time the snapshot took, resumed the sessions'.
func (a *app) logStart(conns int, loaded, resumed time.Duration) {
	res := a.restored
	switch {
	case a.path == "":
		a.log.Printf("no --snapshot: the game's state lives in memory only")
	case res == nil:
		a.log.Printf("no snapshot at %s: a first start, with no players and a stock of %d of each good", a.path, a.cfg.stock)
	case handover.HandedOver(a.w):
		a.log.Printf("handover: restored %d players and %d connections in %v (snapshot %v, sessions %v; %s)",
			len(res.players), conns, (loaded + resumed).Round(time.Microsecond), loaded.Round(time.Microsecond),
			resumed.Round(time.Microsecond), describe(res))
	default:
		a.log.Printf("restored %s from %s ago: %d players, %d connections resumed (%s)",
			kindName(res.kind), age(res.header.Created), len(res.players), conns, describe(res))
	}
	if res != nil && res.refused != nil {
		a.log.Printf("the newest snapshot was refused (%v); the previous one, %s, was used instead", res.refused, res.path)
	}
}

func describe(res *restored) string {
	return fmt.Sprintf("%s, schema %d, written by %s pid %d at %s",
		res.path, res.header.Schema, res.header.AppVersion, res.pid, res.header.Created.Format(time.RFC3339Nano))
}

func kindName(kind string) string {
	if kind == kindAutosave {
		return kind
	}
	return kind + " snapshot"
}

// run serves until the drain signal, then hands over (handover mode) or
// shuts down. A handover that could not save (a full disk) serves on,
// every session where it stopped, until the next drain signal.
func (a *app) run(ln net.Listener) error {
	a.w.ReportVersion(a.rules.version) // the scripts'; read before any reload can run
	go a.reloads(a.w.Reloads())
	if err := a.st.Ready(); err != nil {
		return fmt.Errorf("notify ready: %w", err)
	}
	a.srv.open() // the resumed sessions run, now that READY=1 is out
	if a.cfg.live {
		a.dropOtherRegions()
	}
	a.world.mu.Lock()
	rule, scripts := a.rules.rule, a.rules.version
	a.world.mu.Unlock()
	a.log.Printf("version %s (%s; scripts %s), pid %d: serving on %s (%s)", a.version, rule, scripts, a.pid, ln.Addr(), a.how())
	if a.restored != nil {
		// Only now is the restored state in use: the previous snapshot may go.
		if err := a.restored.confirm(); err != nil {
			a.log.Printf("confirming the restored snapshot: %v", err)
		}
	}
	defer ln.Close()
	for {
		stopAccepting := a.srv.acceptUntil(ln)
		<-a.w.Draining()
		drained := time.Now()
		a.w.Stopping()
		stopAccepting() // the supervisor and the next worker keep the socket
		if a.cfg.live {
			sessions, busy := a.srv.freeze()
			return a.handOverLive(sessions, busy, time.Since(drained))
		}
		sessions := a.srv.stop()
		if !handover.Enabled() {
			return a.shutdown(sessions)
		}
		err := a.handOver(sessions, time.Since(drained))
		if !errors.Is(err, handoff.ErrSaveFailed) {
			return err
		}
		a.srv.resume()
		a.log.Printf("handover: %v; serving on: %d sessions resumed, nobody disconnected", err, len(sessions))
	}
}

func (a *app) how() string {
	switch {
	case !a.w.Supervised():
		return "on its own: no socket passed, bound --listen"
	case handover.Enabled():
		return "under a supervisor, handover mode"
	}
	return "under a supervisor, NOT in handover mode: an upgrade disconnects every player; run the supervisor with --mode handover"
}

// handOver saves the snapshot with every session, stores their connections
// with the supervisor, and says so (handoff.State.HandOver): the next
// worker restores from there. stopping is how long stopping them took.
func (a *app) handOver(sessions []*session, stopping time.Duration) error {
	began := time.Now()
	a.handing = make([]sessionRecord, len(sessions))
	conns := make([]handoff.Conn, len(sessions))
	for i, s := range sessions {
		a.handing[i] = s.record()
		conns[i] = handoff.Conn{Name: s.name, Conn: s.conn}
	}
	if err := a.st.HandOver(conns); err != nil {
		return err // it says what it did not do
	}
	a.log.Printf("handover: saved %d players and %d sessions in %v, stored %d connections; total %v (after %v stopping the sessions)",
		len(a.world.players), len(a.handing), a.saveDur.Round(time.Microsecond), len(conns), time.Since(began).Round(time.Microsecond),
		stopping.Round(time.Microsecond))
	return nil
}

// shutdown ends every session and saves the snapshot: the end of the game,
// or an upgrade outside handover mode.
func (a *app) shutdown(sessions []*session) error {
	goodbye(sessions, goodbyeBound)
	if a.path == "" {
		a.st.HandOver(nil) // stops the autosaves; nothing to save
		a.log.Printf("stopped: %d players lost (no --snapshot)", len(a.world.players))
		return nil
	}
	if err := a.st.HandOver(nil); err != nil {
		return fmt.Errorf("shutdown: saving the snapshot: %w", err)
	}
	a.log.Printf("stopped: saved %d players to %s in %v, closed %d connections",
		len(a.world.players), a.path, a.saveDur.Round(time.Microsecond), len(sessions))
	return nil
}

// save is the State's Save hook. A handover or shutdown save runs once
// nothing else does: the world's lock only says the data is ours.
func (a *app) save(ctx context.Context, path string, kind handoff.SaveKind) error {
	if kind == handoff.SaveAutosave {
		return a.autosave(ctx, path)
	}
	began := time.Now()
	snap := &snapshot{kind: kindShutdown, pid: a.pid}
	if kind == handoff.SaveHandover {
		snap.kind, snap.sessions = kindHandover, a.handing
	}
	var err error
	write := func() {
		a.world.mu.Lock()
		snap.players, snap.stock = a.world.players, a.world.stock
		err = writeSnapshot(ctx, path, a.version, snap)
		a.world.mu.Unlock()
	}
	if a.cfg.live && handover.Enabled() {
		// After HANDOVER=saved (handoff.State.Live): this worker will not
		// serve again, and the next one is taking the region over on the
		// same CPUs right now. This file is for durability only, and the
		// exit after it frees the whole heap: both yield to the players.
		niceAll(exitingNice)
		write()
	} else {
		write()
	}
	a.saveDur = time.Since(began)
	return err
}

// reloads answers the supervisor's reload requests (`supervisor ctl
// reload`): each one reads and compiles the scripts again, then patches the
// rules in place under the world's lock, between two commands. On success
// the supervisor gets the new scripts' version; on failure the reason
// (file:line) and the old rules go on. The log line says how long the
// reload took and, of that, how long the world was locked: the pause the
// players see.
func (a *app) reloads(reqs <-chan handoff.Reload) {
	for req := range reqs {
		began := time.Now()
		var u *update
		var err error
		niced(func() { u, err = a.rules.prepare() }) // off the lock, and behind the players: commands go on meanwhile
		a.world.mu.Lock()
		locked := time.Now()
		old, summary := a.rules.version, ""
		if err == nil {
			summary, err = a.rules.apply(u)
		}
		version, rule := a.rules.version, a.rules.rule
		a.world.mu.Unlock()
		held := time.Since(locked)
		if err != nil {
			a.log.Printf("reload failed: %v; serving on with scripts %s (world locked %s)", err, old, lockMS(held))
			req.Failed(err)
			continue
		}
		a.log.Printf("reload: scripts %s → %s (%s) in %s, world locked %s: %s", old, version, rule,
			lockMS(time.Since(began)), lockMS(held), summary)
		req.Done(version)
	}
}

// lockMS prints d in milliseconds to the microsecond: "0.183ms".
func lockMS(d time.Duration) string {
	return fmt.Sprintf("%.3fms", float64(d)/float64(time.Millisecond))
}
