package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/procswitch/supervisor/state/shm"
)

// A build whose region layout is newer than the stored region's migrates
// it: it opens the older region as its own layout says, copies every record
// into a new region of this build's layout and stores that under this
// build's name (region.v<version>). A newer layout only grows the records
// (more goods in a bag), so a record's bytes carry over; the journal starts
// empty. The older region stays in the fd store, untouched but for its
// generation, until this worker is ready: if it fails before that, the
// rollback to the previous build finds its region intact. Once ready, the
// worker removes every other layout's region from the store. A rollback
// after that, to a build that cannot read this layout, starts from the
// snapshot file, as after a restart of the supervisor.

// olderRegion takes the newest stored region of an older layout than this
// build's, if any.
func (a *app) olderRegion() (*os.File, uint32) {
	for v := uint32(regionVersion) - 1; v >= 1; v-- {
		if f, err := a.w.File(regionName(v)); err == nil {
			return f, v
		}
	}
	return nil, 0
}

// migrateRegion makes a region of this build's layout, for maxPlayers,
// from the older region at f (stored as layout version).
func migrateRegion(f *os.File, version uint32, maxPlayers int) (*liveRegion, error) {
	have, err := shm.ReadLayout(f)
	if err != nil {
		return nil, fmt.Errorf("live: the stored v%d region: %w", version, err)
	}
	if have.Name != regionLayoutName || have.Version != version || have.RecordSize > regionRecordSize {
		return nil, fmt.Errorf("live: the stored v%d region's layout is %v: this build (%s v%d, %d-byte records) cannot migrate it",
			version, have, regionLayoutName, regionVersion, regionRecordSize)
	}
	old, err := shm.Open(f, shm.Layout{Name: have.Name, Version: have.Version, RecordSize: have.RecordSize})
	if err != nil {
		return nil, fmt.Errorf("live: the stored v%d region: %w", version, err)
	}
	defer old.Close()
	if players := old.Len() - firstPlayer; players > maxPlayers {
		return nil, fmt.Errorf("live: migrating the v%d region: it has %d players, --live-players is %d; raise it", version, players, maxPlayers)
	}
	i := 0
	r, err := shm.Migrate(old, regionLayout(maxPlayers), regionLayoutName, func(o, n []byte) error {
		switch {
		case i == 0:
			n[0] = kindMeta // an empty journal
		case i >= firstJournal && i < firstPlayer:
		default:
			copy(n, o)
		}
		i++
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("live: migrating the v%d region: %w", version, err)
	}
	return newLiveRegion(r), nil
}

// dropOtherRegions removes from the fd store the regions of other layouts
// than this build's: this worker is ready on its own.
func (a *app) dropOtherRegions() {
	for _, name := range a.w.Names() {
		if strings.HasPrefix(name, "region.v") && name != regionFDName {
			if err := a.w.RemoveFD(name); err != nil {
				a.log.Printf("live: removing %s from the fd store: %v", name, err)
			} else {
				a.log.Printf("live: %s removed from the fd store: this worker is ready on its own layout's", name)
			}
		}
	}
}
