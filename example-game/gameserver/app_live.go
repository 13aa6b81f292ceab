package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/procswitch/supervisor/handoff"
	"github.com/procswitch/supervisor/handoff/handover"
)

// startLive takes the world and the sessions over from the region in the
// fd store, when there is one (a handover, a crash restart, a rollback),
// else from the snapshot file (a first start, or after the supervisor
// itself restarted), and then makes the region and stores it.
func (a *app) startLive(conns []handoff.Conn) error {
	began := time.Now()
	if a.prepared != nil {
		<-a.prepared
	}
	if a.pre != nil {
		sessions, reread, err := a.pre.takeOver()
		if err == nil {
			a.region.Close() // the view has its own
			a.log.Printf("live: the world was read ahead in %v (%d players); %d read again at the takeover",
				a.pre.took.Round(time.Microsecond), a.pre.n, reread)
			return a.resumeWorld(a.pre.lr, a.pre.world, sessions, conns, began)
		}
		a.log.Printf("%v; reading the whole region again", err)
		a.pre.lr.r.Close()
	}
	f := a.region
	if f == nil {
		f, _ = a.w.File(regionFDName) // passed with GO
	}
	if f != nil {
		lr, world, sessions, err := a.openWorld(f)
		f.Close()
		if err == nil {
			return a.resumeWorld(lr, world, sessions, conns, began)
		}
		a.log.Printf("%v; starting from the snapshot file instead", err)
		a.w.RemoveFD(regionFDName)
	} else if f, version := a.olderRegion(); f != nil {
		lr, err := migrateRegion(f, version, a.cfg.livePlayers)
		f.Close()
		if err != nil {
			return err // the upgrade fails; the older region is intact for a rollback
		}
		world, sessions, err := a.worldFrom(lr)
		if err == nil {
			err = a.w.StoreFD(regionFDName, lr.r.File())
		}
		if err != nil {
			lr.r.Close()
			return fmt.Errorf("live: after migrating the region from layout v%d: %w", version, err)
		}
		a.log.Printf("live: migrated the region from layout v%d to v%d: %d players in %v (the v%d region stays stored until this worker is ready)",
			version, regionVersion, len(world.players), time.Since(began).Round(time.Microsecond), version)
		if failAfterMigrate {
			return fmt.Errorf("a build that fails after the migration, for the tests: exiting before it is ready")
		}
		return a.resumeWorld(lr, world, sessions, conns, began)
	}
	// No region: whatever connections are stored, their sessions are unknown.
	if a.srv != nil {
		a.srv.dropAhead()
		a.srv, a.ahead = nil, nil
	}
	for _, c := range conns {
		a.w.RemoveFD(c.Name)
		hangUp(c.Conn)
	}
	if err := a.restoreFile(a.path); err != nil {
		return err
	}
	lr, err := createRegion(a.world, a.cfg.livePlayers)
	if err != nil {
		return err
	}
	if err := a.w.StoreFD(regionFDName, lr.r.File()); err != nil {
		lr.r.Close()
		return fmt.Errorf("live: storing the region: %w", err)
	}
	a.world.live, a.srv.conns, a.srv.storeConns = lr, newConnStore(a.w, a.log), a.cfg.liveConns
	a.logStart(0, a.loaded, 0)
	a.log.Printf("live: the data is in a shared-memory region of %d players' room (%s), stored with the supervisor; made in %v",
		a.cfg.livePlayers, regionLayoutName, time.Since(began).Round(time.Microsecond))
	return nil
}

// handOverLive hands the frozen server's sessions over (server.freeze):
// every connection in the store before HANDOVER=saved, those of
// --live-conns=false too (a crash ends them, an upgrade does not); their
// sessions and the world are in the region. Then the snapshot file, for
// durability only (State.Live). stopping is how long the freeze took, busy
// how many sessions it found in the middle of a command.
func (a *app) handOverLive(sessions []*session, busy int, stopping time.Duration) error {
	began := time.Now()
	stored := 0
	for _, s := range sessions {
		if s.live == nil {
			continue // served without a slot: a handover ends it, as a crash does
		}
		stored++
		if !s.live.inStore {
			a.srv.conns.add(s.live.name, s.conn)
			s.live.inStore = true
		}
	}
	a.srv.conns.flush()
	if err := a.st.HandOver(nil); err != nil {
		return err // it says what it did not do
	}
	a.log.Printf("handover: saved %d players and %d sessions in %v, stored %d connections; total %v (after %v stopping the sessions, %d of them in the middle of a command)",
		len(a.world.players), stored, a.saveDur.Round(time.Microsecond), stored, time.Since(began).Round(time.Microsecond),
		stopping.Round(time.Microsecond), busy)
	return nil
}

// prepareSessions is the State's Prepare hook, for --live: it makes a
// session, and its goroutine, for each stored connection passed at start,
// ahead of the takeover (server.prepare): in a worker started ahead of a
// handover, while the previous worker still serves. The takeover only
// reads each one's record (resumeWorld); a connection passed with GO gets
// its session then.
func (a *app) prepareSessions(conns []handoff.Conn) {
	a.srv = newServer(nil, a.log) // its game once the world is taken over
	a.ahead = make(map[string]*session, len(conns))
	for _, c := range conns {
		slot, ok := sessionSlot(c.Name)
		if !ok {
			continue
		}
		s, err := a.srv.newResumed(c.Conn, slot)
		if err != nil {
			continue // made again at the takeover, which reports it
		}
		a.srv.prepare(s)
		a.ahead[c.Name] = s
	}
}

// sessionSlot is the session slot of a stored connection called name
// ("s<slot>").
func sessionSlot(name string) (int, bool) {
	slot, err := strconv.Atoi(strings.TrimPrefix(name, "s"))
	return slot, err == nil && strings.HasPrefix(name, "s")
}

// openWorld reads the world from the region at f.
func (a *app) openWorld(f *os.File) (*liveRegion, *world, map[int]sessionRec, error) {
	lr, err := openRegion(f)
	if err != nil {
		return nil, nil, nil, err
	}
	world, sessions, err := a.worldFrom(lr)
	if err != nil {
		lr.r.Close()
		return nil, nil, nil, err
	}
	return lr, world, sessions, nil
}

// worldFrom reads the world and the sessions from a region.
func (a *app) worldFrom(lr *liveRegion) (*world, map[int]sessionRec, error) {
	players, err := lr.readPlayers(true) // nothing else serves meanwhile
	if err != nil {
		return nil, nil, err
	}
	world, err := newWorld(players, lr.readGoods(), a.rules.goods, a.cfg.stock)
	if err != nil {
		return nil, nil, fmt.Errorf("live: the stored region: %w", err)
	}
	return world, lr.readSessions(), nil
}

// restoreFile is restore, for --live.
func (a *app) restoreFile(path string) error {
	began := time.Now()
	err := a.load(path)
	a.loaded = time.Since(began)
	return err
}

// prepareLive takes the region, if the supervisor passed it at start (a
// worker started ahead of a handover, a crash restart), and reads the
// world from it: in a worker started ahead, now, while the previous worker
// still serves; in a cold start, alongside the making ready of the passed
// connections (app.start), on the other CPU: startLive waits for it.
func (a *app) prepareLive() {
	f, err := a.w.File(regionFDName) // now: it waits for no other use of the Worker
	if err != nil {
		return // a first start; or it comes with GO
	}
	a.region = f
	ahead := handover.Ahead()
	read := func() {
		if a.pre, err = prepareRegion(f, a.rules.goods, a.cfg.stock, !ahead); err != nil {
			a.log.Printf("%v; reading it after the takeover instead", err)
			a.pre = nil
		}
	}
	if ahead {
		read() // before WAITING
		if a.pre != nil && a.standby {
			a.pre.follow(a.log.Printf)
		}
		return
	}
	done := make(chan struct{})
	a.prepared = done
	go func() {
		defer close(done)
		read()
	}()
}

// resumeWorld serves the world taken from a stored region and resumes each
// session on its stored connection; slots whose connection is gone are
// freed, connections without a session hung up.
func (a *app) resumeWorld(lr *liveRegion, world *world, sessions map[int]sessionRec, conns []handoff.Conn, began time.Time) error {
	players, took := world.players, time.Since(began)
	world.live = lr
	a.world = world
	g := newGame(world, a.rules, a.version, a.pid)
	if a.srv == nil {
		a.srv = newServer(g, a.log)
	}
	a.srv.game = g // before any session made ahead runs: open
	a.srv.conns, a.srv.storeConns = newConnStore(a.w, a.log), a.cfg.liveConns
	restarted := !handover.HandedOver(a.w)
	resumed, dropped, asked := 0, 0, 0
	ready := make([]*session, 0, len(conns))
	for _, c := range conns {
		slot, named := sessionSlot(c.Name)
		rec, ok := sessions[slot]
		if !named || !ok {
			a.w.RemoveFD(c.Name)
			hangUp(c.Conn)
			dropped++
			continue
		}
		delete(sessions, slot)
		ahead := a.ahead[c.Name]
		if ahead != nil && ahead.conn != c.Conn {
			// Its connection was closed before GO, and a new one stored under
			// the same name (its slot taken again), passed with GO: the
			// session made ahead ends at open.
			ahead = nil
		}
		s, err := a.srv.resumeLive(ahead, c.Conn, slot, rec, restarted)
		if err != nil {
			a.log.Printf("%v: hung up", err)
			a.w.RemoveFD(c.Name)
			hangUp(c.Conn)
			world.mu.Lock()
			lr.release(slot)
			world.mu.Unlock()
			dropped++
			continue
		}
		ready = append(ready, s)
		resumed++
		if rec.state != markSettled {
			asked++ // now (a mark), or at its first line
		}
	}
	world.mu.Lock()
	for slot := range sessions { // their clients left meanwhile
		lr.release(slot)
	}
	world.mu.Unlock()
	a.ahead = nil // those not matched end at open
	matched := time.Since(began)
	a.srv.hold() // until READY=1 (app.run)
	for _, s := range ready {
		a.srv.start(s)
	}
	started := time.Since(began)
	how := "handover"
	if restarted {
		how = "restart"
	}
	a.log.Printf("live %s: %d players and %d sessions resumed from the stored region (generation %d) in %v (the region taken over in %v, the sessions matched by %v, started by %v); %d connections dropped, %d sessions ended; %d asked the kernel where they stand",
		how, len(players), resumed, lr.r.Generation(), time.Since(began).Round(time.Microsecond), took.Round(time.Microsecond),
		matched.Round(time.Microsecond), started.Round(time.Microsecond), dropped, len(sessions), asked)
	return nil
}
