package main

import (
	"context"
	"time"
)

// autosave is the State's Save hook for an autosave, which handoff.State
// runs every --autosave while the game serves, so that a crash loses at
// most one period. The game goes on while it saves: the data is copied
// under the world's lock (a memmove of the player table; bags are
// copy-on-write) and written out after the lock is released. A period in
// which nothing changed is skipped. When the drain signal comes, ctx ends:
// a save in progress is abandoned (its temporary file removed, the snapshot
// left as it was), so that it cannot delay a handover, nor commit after the
// handover's save.
//
// The world counts changes from the restored state, which is on disk: every
// change since, including those that resumed sessions or early clients made
// before the first autosave, is unsaved.
func (a *app) autosave(ctx context.Context, path string) error {
	if a.world.changed() == a.autosaved {
		return nil
	}
	began := time.Now()
	players, stock, changes := a.world.copyOut(a.spare)
	locked := time.Since(began)
	err := writeSnapshot(ctx, path, a.version, &snapshot{kind: kindAutosave, pid: a.pid, players: players, stock: stock})
	a.spare = players
	if err != nil {
		return err
	}
	a.log.Printf("autosave: saved %d players (%d changes) in %v (%v of it under the lock)",
		len(players), changes-a.autosaved, time.Since(began).Round(time.Microsecond), locked.Round(time.Microsecond))
	a.autosaved = changes
	return nil
}
