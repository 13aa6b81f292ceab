package main

import (
	"errors"
	"fmt"
	"os"
	"sync"
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

	goods        []int // for reading it all again (refresh)
	defaultStock int64
	mu           sync.Mutex    // a standby's follow against takeOver
	stop         chan struct{} // closed to end follow; nil when not following
	stopped      chan struct{} // closed when follow has returned
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
	p := &prepared{lr: lr, head: lr.head(), goods: goods, defaultStock: defaultStock}
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
	if p.stop != nil {
		close(p.stop)
		<-p.stopped
	}
	p.mu.Lock()
	defer p.mu.Unlock()
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
		i := lr.journaled(k)
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

// followEvery is how often a standby brings its world up to date: well
// within what the journal holds at any plausible rate of writes (4096
// records of 32 entries: 131,072 writes).
const followEvery = 250 * time.Millisecond

// follow keeps the world read ahead up to date with the region until
// takeOver: a standby (the supervisor's --standby) may wait for hours for
// the crash it stands by for, and the journal holds only so many writes.
// At the takeover only what was written since the last refresh is read
// again. logf reports a refresh that had to read everything again.
func (p *prepared) follow(logf func(string, ...any)) {
	p.stop, p.stopped = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(p.stopped)
		t := time.NewTicker(followEvery)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
			p.mu.Lock()
			all, err := p.refresh()
			p.mu.Unlock()
			if err != nil {
				logf("live standby: following the region: %v", err)
			} else if all {
				logf("live standby: read the whole region again (%d players)", p.n)
			}
		}
	}()
}

// refresh reads the players written since the last read, as the journal
// lists them, and those appended; when the journal no longer reaches back
// that far, or a record read disagrees with the world, everything again.
// Call with mu held.
func (p *prepared) refresh() (all bool, err error) {
	lr, w := p.lr, p.world
	head := lr.head() // before any record: what is written after is journaled at or after it
	from := p.head - min(p.head, journalSlack)
	ok := head-from <= journalSize
	for k := from; ok && k < head; k++ {
		i := lr.journaled(k)
		if i >= p.n {
			continue // read below
		}
		pl, err := decodePlayer(lr.r.Record(firstPlayer + i))
		if ok = err == nil && pl.id == w.players[i].id; ok {
			w.players[i] = pl
		}
	}
	for i := firstPlayer + p.n; ok && i < lr.r.Len(); i++ {
		pl, err := decodePlayer(lr.r.Record(i))
		if err != nil {
			break // being written: journaled, so read again next time
		}
		w.index[pl.id] = len(w.players)
		w.players = append(w.players, pl)
		p.n++
	}
	// Writes during the reads may have wrapped the journal over entries
	// not yet read.
	ok = ok && lr.head()-from <= journalSize
	if !ok {
		players, err := lr.readPlayers(false)
		if err != nil {
			return false, err
		}
		world, err := newWorld(players, lr.readGoods(), p.goods, p.defaultStock)
		if err != nil {
			return false, err
		}
		p.world, p.n = world, len(players)
	}
	p.head = head
	return !ok, nil
}
