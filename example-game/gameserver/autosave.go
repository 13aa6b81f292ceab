package main

import (
	"context"
	"time"
)

// autosaver saves the snapshot periodically, so that a crash loses at most
// one period. The game goes on while it saves: the data is copied under the
// world's lock (a memmove of the player table; bags are copy-on-write) and
// written out after the lock is released. A period in which nothing changed
// is skipped.
type autosaver struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// startAutosave starts saving every --autosave; nil when off.
func (a *app) startAutosave() *autosaver {
	if a.cfg.autosave <= 0 || a.path == "" {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	as := &autosaver{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(as.done)
		// The world counts changes from the restored state, which is on
		// disk: every change, including those that resumed sessions or
		// early clients made before this goroutine ran, is unsaved.
		a.autosaveLoop(ctx, 0)
	}()
	return as
}

// stop ends the autosaves; a save in progress is abandoned (its temporary
// file removed, the snapshot left as it was), so that it cannot delay a
// handover, nor commit after the handover's save.
func (as *autosaver) stop() {
	if as == nil {
		return
	}
	as.cancel()
	<-as.done
}

// autosaveLoop saves whenever the world has changed since the change count
// saved.
func (a *app) autosaveLoop(ctx context.Context, saved uint64) {
	t := time.NewTicker(a.cfg.autosave)
	defer t.Stop()
	var spare []player
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if a.world.changed() == saved {
			continue
		}
		began := time.Now()
		players, stock, changes := a.world.copyOut(spare)
		locked := time.Since(began)
		err := writeSnapshot(ctx, a.path, a.version, &snapshot{kind: kindAutosave, pid: a.pid, players: players, stock: stock})
		spare = players
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			a.log.Printf("autosave: %v", err)
			continue
		}
		a.log.Printf("autosave: saved %d players (%d changes) in %v (%v of it under the lock)",
			len(players), changes-saved, time.Since(began).Round(time.Microsecond), locked.Round(time.Microsecond))
		saved = changes
	}
}
