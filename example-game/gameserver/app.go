package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/procswitch/supervisor/handoff"
)

// goodbyeBound bounds writing the last replies to clients when the server
// stops with no next worker to hand them to.
const goodbyeBound = 2 * time.Second

// app is one worker's life: take over the state, serve, hand it over.
type app struct {
	cfg     config
	log     *log.Logger
	w       *handoff.Worker
	path    string // the snapshot; "" when nothing is saved
	version string
	pid     int

	world    *world
	srv      *server
	restored *restored // nil when nothing was restored
	autosave *autosaver
}

// errCalledOff means the worker was stopped, or its handover called off,
// before it began to serve: it exits without doing anything.
var errCalledOff = errors.New("stopped before it began to serve")

// serve runs the worker until it has handed over or shut down.
func serve(cfg config, logger *log.Logger) error {
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
	a := &app{cfg: cfg, log: logger, w: w, version: cleanVersion(version), pid: os.Getpid()}
	a.path = a.snapshotPath()
	err = a.start()
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
	p := a.w.SnapshotPath()
	if p != "" && a.cfg.snapshot != "" && p != a.cfg.snapshot {
		a.log.Printf("--snapshot %s ignored: the supervisor names %s", a.cfg.snapshot, p)
	}
	if p == "" {
		p = a.cfg.snapshot
	}
	return p
}

// start takes over: it waits for the previous worker's handover (if this
// one was started ahead of one), restores the snapshot and resumes the
// handed-over sessions. It does not accept yet.
func (a *app) start() error {
	handover := os.Getenv(handoff.EnvHandoverFD) != "" // AwaitHandover unsets it
	conns, err := a.await()
	if err != nil {
		return err
	}
	began := time.Now()
	if err := a.restore(); err != nil {
		closeConns(conns)
		return err
	}
	resumed := a.resume(conns)
	a.logStart(handover, resumed, time.Since(began))
	return nil
}

// await returns the connections handed over; see handoff.AwaitHandover.
// The drain signal and --handover-wait end the wait.
func (a *app) await() ([]handoff.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.handoverWait)
	defer cancel()
	go func() {
		select {
		case <-a.w.Draining():
			cancel()
		case <-ctx.Done():
		}
	}()
	conns, err := a.w.AwaitHandover(ctx)
	switch {
	case err == nil:
		return conns, nil
	case errors.Is(err, handoff.ErrHandoverAborted), errors.Is(err, context.Canceled):
		err = fmt.Errorf("%w: %w", errCalledOff, err)
	case errors.Is(err, context.DeadlineExceeded):
		err = fmt.Errorf("the previous worker did not hand over within --handover-wait %v", a.cfg.handoverWait)
	}
	closeConns(conns)
	return nil, err
}

func closeConns(conns []handoff.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// restore reads the snapshot, if there is one, into a new world.
func (a *app) restore() error {
	var snap snapshot
	if a.path != "" {
		res, err := readSnapshot(a.path)
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		if res != nil {
			a.restored, snap = res, res.snapshot
		}
	}
	world, err := newWorld(snap.players, snap.stock, a.cfg.stock)
	if err != nil {
		return fmt.Errorf("restore: %s: %w", a.restored.path, err)
	}
	a.world = world
	a.srv = newServer(&game{world: world, version: a.version, pid: a.pid}, a.log)
	return nil
}

// resume starts serving the handed-over connections, each where its
// session stopped in the previous worker. A connection the snapshot does
// not know (the newest snapshot was refused, and an older one restored) is
// closed: its session's state is unknown.
func (a *app) resume(conns []handoff.Conn) (resumed int) {
	recs := make(map[string]sessionRecord)
	if a.restored != nil {
		for _, s := range a.restored.sessions {
			recs[s.name] = s
		}
	}
	unknown := 0 // or whose peer left meanwhile
	for _, c := range conns {
		rec, ok := recs[c.Name]
		if !ok || rec.remote == "" || rec.remote != remoteAddr(c) {
			unknown++
			c.Close()
			continue
		}
		if rec.player != "" && !a.world.has(rec.player) {
			rec.player = "" // cannot happen with an intact snapshot
		}
		a.srv.add(c.Conn, rec)
		resumed++
	}
	if unknown > 0 {
		a.log.Printf("closed %d handed-over connections that the restored snapshot has no session for, or whose peer left", unknown)
	}
	return resumed
}

// logStart says what was restored, from where, and how old it is.
func (a *app) logStart(handover bool, conns int, took time.Duration) {
	res := a.restored
	switch {
	case a.path == "":
		a.log.Printf("no --snapshot: the game's state lives in memory only")
	case res == nil:
		a.log.Printf("no snapshot at %s: a first start, with no players and a stock of %d of each good", a.path, a.cfg.stock)
	case handover:
		a.log.Printf("handover: restored %d players and %d connections in %v (%s)",
			len(res.players), conns, took.Round(time.Microsecond), describe(res))
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
// shuts down.
func (a *app) run(ln net.Listener) error {
	if err := a.w.Ready(); err != nil {
		return fmt.Errorf("notify ready: %w", err)
	}
	a.log.Printf("version %s (%s), pid %d: serving on %s (%s)", a.version, shopRule, a.pid, ln.Addr(), a.how())
	if a.restored != nil {
		// Only now is the restored state in use: the previous snapshot may go.
		if err := a.restored.confirm(); err != nil {
			a.log.Printf("confirming the restored snapshot: %v", err)
		}
	}
	a.autosave = a.startAutosave()
	accepting := make(chan struct{})
	go func() {
		defer close(accepting)
		a.srv.accept(ln)
	}()
	<-a.w.Draining()
	a.w.Stopping()
	ln.Close() // the supervisor and the next worker keep the socket
	<-accepting
	a.autosave.stop()
	sessions := a.srv.stop()
	if a.w.HandoverMode() {
		return a.handOver(sessions)
	}
	return a.shutdown(sessions)
}

func (a *app) how() string {
	switch {
	case !a.w.Supervised():
		return "on its own: no socket passed, bound --listen"
	case a.w.HandoverMode():
		return "under a supervisor, handover mode"
	}
	return "under a supervisor, NOT in handover mode: an upgrade disconnects every player; run the supervisor with --mode handover"
}

// handOver saves the snapshot with every session, stores their connections
// with the supervisor, and says so: the next worker restores from there.
func (a *app) handOver(sessions []*session) error {
	if a.path == "" {
		return errors.New("handover: the supervisor named no snapshot path")
	}
	began := time.Now()
	recs := make([]sessionRecord, len(sessions))
	for i, s := range sessions {
		recs[i] = s.record()
	}
	a.world.mu.Lock() // nothing else runs now; the lock says the data is ours
	snap := &snapshot{kind: kindHandover, pid: a.pid, players: a.world.players, stock: a.world.stock, sessions: recs}
	err := writeSnapshot(context.Background(), a.path, a.version, snap)
	a.world.mu.Unlock()
	if err != nil {
		return fmt.Errorf("handover: saving the snapshot: %w; exiting without handing over: the next worker restores the last complete snapshot", err)
	}
	saved := time.Since(began)
	stored := 0
	for _, s := range sessions {
		if err := a.w.StoreConn(s.name, s.conn.(syscall.Conn)); err != nil {
			a.log.Printf("handover: %v", err)
			continue
		}
		stored++
	}
	if err := a.w.HandoverSaved(); err != nil {
		return fmt.Errorf("handover: %w", err)
	}
	a.log.Printf("handover: saved %d players and %d sessions in %v, stored %d connections; total %v",
		len(snap.players), len(recs), saved.Round(time.Microsecond), stored, time.Since(began).Round(time.Microsecond))
	return nil
}

// shutdown ends every session and saves the snapshot: the end of the game,
// or an upgrade outside handover mode.
func (a *app) shutdown(sessions []*session) error {
	goodbye(sessions, goodbyeBound)
	if a.path == "" {
		a.log.Printf("stopped: %d players lost (no --snapshot)", len(a.world.players))
		return nil
	}
	began := time.Now()
	a.world.mu.Lock()
	snap := &snapshot{kind: kindShutdown, pid: a.pid, players: a.world.players, stock: a.world.stock}
	err := writeSnapshot(context.Background(), a.path, a.version, snap)
	a.world.mu.Unlock()
	if err != nil {
		return fmt.Errorf("shutdown: saving the snapshot: %w", err)
	}
	a.log.Printf("stopped: saved %d players to %s in %v, closed %d connections",
		len(snap.players), a.path, time.Since(began).Round(time.Microsecond), len(sessions))
	return nil
}
