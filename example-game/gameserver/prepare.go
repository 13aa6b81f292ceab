package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/procswitch/supervisor/state/shm"
)

// A --live worker started ahead of a handover gets the region at start
// (the supervisor passes a worker started ahead the fd store's state, and
// the connections with GO): it reads every player while the old worker
// still serves, through a view that writes nothing (shm.View), and builds
// its world. After GO it takes the region over and reads again only the
// players written since it began, which the region's journal lists, and
// the stock and the sessions: the handover's blackout no longer grows with
// the number of players. A crash restart goes the same way, with nobody
// writing meanwhile.

// prepared is a world read ahead from a region.
type prepared struct {
	lr    *liveRegion // a view until takeOver
	world *world
	head  uint64 // the journal's head before the players were read
	n     int    // players read
	took  time.Duration
}

// journalSlack is how many journal entries before the head read first are
// read again: those of the transaction that may have been applying.
const journalSlack = shm.MaxTxRecords

var errJournalOverrun = errors.New("more players were written meanwhile than the journal holds")

// prepareRegion reads the world from the region at f, ahead; cold says
// nothing serves meanwhile (a crash restart), so it may use every CPU.
func prepareRegion(f *os.File, goods []int, defaultStock int64, cold bool) (*prepared, error) {
	began := time.Now()
	lr, err := mapRegion(f, shm.View)
	if err != nil {
		return nil, err
	}
	r := lr.r
	p := &prepared{lr: lr, head: lr.head()}
	players, err := lr.readPlayers(cold) // a record being written may read torn: the journal says which
	if err != nil {
		r.Close()
		return nil, err
	}
	p.n = len(players)
	// What the takeover reads and allocates inside the blackout: the pages
	// of the sessions and the journal, faulted in now, and the sessions'
	// table and free list, allocated now (fresh heap is slow to touch).
	if err := r.Prefault(0, firstPlayer); err != nil {
		r.Close()
		return nil, err
	}
	lr.readSessions()
	if p.world, err = newWorld(players, lr.readGoods(), goods, defaultStock); err != nil {
		r.Close()
		return nil, fmt.Errorf("live: the stored region: %w", err)
	}
	p.took = time.Since(began)
	return p, nil
}

// takeOver makes the prepared region ours, once the previous worker has
// stopped, and brings the world up to date: the players appended and
// those written since prepareRegion, the stock, the sessions.
func (p *prepared) takeOver() (sessions map[int]sessionRec, reread int, err error) {
	lr, w := p.lr, p.world
	if err := lr.r.TakeOver(); err != nil {
		return nil, 0, fmt.Errorf("live: the stored region: %w", err)
	}
	from, to := p.head-min(p.head, journalSlack), lr.head()
	if to-from > journalSize {
		return nil, 0, fmt.Errorf("live: %w (%d)", errJournalOverrun, to-from)
	}
	for i := firstPlayer + p.n; i < lr.r.Len(); i++ {
		pl, err := decodePlayer(lr.r.Record(i))
		if err != nil {
			return nil, 0, fmt.Errorf("live: the stored region's record %d: %w", i, err)
		}
		w.index[pl.id] = len(w.players)
		w.players = append(w.players, pl)
		reread++
	}
	for k := from; k < to; k++ {
		at := firstJournal + int(k/journalPerRec)%journalRecords
		i := int(le.Uint64(lr.r.Record(at)[8*(k%journalPerRec):]))
		if i >= p.n {
			continue // read above
		}
		pl, err := decodePlayer(lr.r.Record(firstPlayer + i))
		if err != nil || pl.id != w.players[i].id {
			return nil, 0, fmt.Errorf("live: the stored region's record %d, journaled: %v", firstPlayer+i, err)
		}
		w.players[i] = pl
		reread++
	}
	for item, remain := range lr.readGoods() {
		if _, ok := w.stock[item]; ok {
			w.stock[item] = remain
		}
	}
	return lr.readSessions(), reread, nil
}
