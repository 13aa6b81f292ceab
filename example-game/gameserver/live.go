package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"

	"github.com/procswitch/supervisor/state/shm"
)

// liveRegion is the world's shared-memory copy (region.go). Its methods
// run with the world's lock held: the region has one writer.
type liveRegion struct {
	r     *shm.Region
	goods map[int]int // item → its record
	free  []int       // free session slots, the lowest last
	rec   []byte      // scratch records
	jrec  []byte
	meta  []byte
	dirty []int // goods whose stock changed in the command running

	sessions map[int]sessionRec // readSessions' table, reused
}

func newLiveRegion(r *shm.Region) *liveRegion {
	return &liveRegion{r: r, goods: map[int]int{}, rec: make([]byte, regionRecordSize),
		jrec: make([]byte, regionRecordSize), meta: make([]byte, regionRecordSize)}
}

// head is how many journal entries were ever written.
func (lr *liveRegion) head() uint64 { return le.Uint64(lr.r.Record(0)[metaHead:]) }

// createRegion makes a region for w's players (and room for maxPlayers)
// and writes w into it: a first start, or a start from the snapshot file.
func createRegion(w *world, maxPlayers int) (*liveRegion, error) {
	if len(w.players) > maxPlayers {
		return nil, fmt.Errorf("--live-players %d: the snapshot has %d players; raise it", maxPlayers, len(w.players))
	}
	r, err := shm.Create(regionLayoutName, regionLayout(maxPlayers))
	if err != nil {
		return nil, fmt.Errorf("live: %w", err)
	}
	lr := newLiveRegion(r)
	recs := make([][]byte, 0, firstPlayer)
	meta := make([]byte, regionRecordSize)
	meta[0] = kindMeta
	recs = append(recs, meta)
	items := make([]int, 0, len(w.stock))
	for item := range w.stock {
		items = append(items, item)
	}
	slices.Sort(items)
	if len(items) > maxGoods {
		r.Close()
		return nil, fmt.Errorf("live: the shop sells %d goods, the region holds %d", len(items), maxGoods)
	}
	for i := range maxGoods {
		rec := make([]byte, regionRecordSize)
		if i < len(items) {
			encodeGood(rec, items[i], w.stock[items[i]])
			lr.goods[items[i]] = firstGood + i
		}
		recs = append(recs, rec)
	}
	for range maxSessions + journalRecords {
		recs = append(recs, make([]byte, regionRecordSize)) // free slots; an empty journal
	}
	for i := range w.players {
		rec := make([]byte, regionRecordSize)
		if err := encodePlayer(rec, &w.players[i]); err != nil {
			r.Close()
			return nil, fmt.Errorf("live: %w", err)
		}
		recs = append(recs, rec)
	}
	for len(recs) > 0 {
		n := min(len(recs), shm.MaxTxRecords)
		err := r.Update(func(tx *shm.Tx) error {
			for _, rec := range recs[:n] {
				if _, err := tx.Append(rec); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("live: filling the region: %w", err)
		}
		recs = recs[n:]
	}
	for slot := maxSessions - 1; slot >= 0; slot-- {
		lr.free = append(lr.free, slot)
	}
	return lr, nil
}

// openRegion maps the region a previous worker left (f, from the fd
// store), taking it over.
func openRegion(f *os.File) (*liveRegion, error) { return mapRegion(f, shm.Open) }

// mapRegion maps the region at f with open (shm.Open, or shm.View to read
// it ahead), as this build's layout, with its fixed records.
func mapRegion(f *os.File, open func(*os.File, shm.Layout) (*shm.Region, error)) (*liveRegion, error) {
	r, err := open(f, shm.Layout{Name: regionLayoutName, Version: regionVersion, RecordSize: regionRecordSize})
	if err != nil {
		return nil, fmt.Errorf("live: the stored region: %w", err)
	}
	if r.Len() < firstPlayer {
		r.Close()
		return nil, fmt.Errorf("live: the stored region has %d records, fewer than its %d fixed ones", r.Len(), firstPlayer)
	}
	return newLiveRegion(r), nil
}

// readPlayers decodes every player record; with parallel, on as many
// goroutines as there are CPUs, up to two. Parallel is for when nothing
// else serves: a cold start, the takeover; not a read ahead, which shares
// the CPUs with the worker serving meanwhile.
func (lr *liveRegion) readPlayers(parallel bool) ([]player, error) {
	n := lr.r.Len() - firstPlayer
	players := make([]player, n)
	parts := 1
	if parallel && n >= parallelDecodeMin && runtime.GOMAXPROCS(0) > 1 {
		parts = 2
	}
	errs := make([]error, parts)
	var wg sync.WaitGroup
	for p := range parts {
		from, to := firstPlayer+n*p/parts, firstPlayer+n*(p+1)/parts
		wg.Go(func() { errs[p] = lr.decodePlayers(players[from-firstPlayer:to-firstPlayer], from) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return players, nil
}

// parallelDecodeMin is the fewest players worth a second goroutine.
const parallelDecodeMin = 10_000

// decodePlayers decodes the records from on into out, with an arena of
// their own.
func (lr *liveRegion) decodePlayers(out []player, from int) error {
	arena := newPlayerArena(func(yield func([]byte) bool) {
		for i := range out {
			if !yield(lr.r.Record(from + i)) {
				return
			}
		}
	})
	for i := range out {
		p, err := arena.decode(lr.r.Record(from + i))
		if err != nil {
			return fmt.Errorf("live: the stored region's record %d: %w", from+i, err)
		}
		out[i] = p
	}
	return nil
}

// readGoods decodes the stock, noting each good's record.
func (lr *liveRegion) readGoods() map[int]int64 {
	stock := map[int]int64{}
	for i := firstGood; i < firstGood+maxGoods; i++ {
		if item, remain, ok := decodeGood(lr.r.Record(i)); ok {
			stock[item], lr.goods[item] = remain, i
		}
	}
	return stock
}

// readSessions decodes the sessions in use, by slot, and notes the free
// slots.
func (lr *liveRegion) readSessions() map[int]sessionRec {
	if lr.sessions == nil {
		lr.sessions, lr.free = make(map[int]sessionRec, 1024), make([]int, 0, maxSessions)
	}
	sessions := lr.sessions
	clear(sessions)
	lr.free = lr.free[:0]
	for slot := maxSessions - 1; slot >= 0; slot-- {
		if rec := lr.r.Record(firstSession + slot); rec[0] == kindSession && rec[1] == 1 {
			sessions[slot] = decodeSession(rec)
		} else {
			lr.free = append(lr.free, slot)
		}
	}
	return sessions
}

// take allocates a session slot for a new connection; false when all are
// in use.
func (lr *liveRegion) take() (int, error) {
	if len(lr.free) == 0 {
		return -1, fmt.Errorf("live: all %d session slots are in use", maxSessions)
	}
	slot := lr.free[len(lr.free)-1]
	if err := lr.setSession(slot, sessionRec{used: true, player: -1, state: markSettled}); err != nil { // nothing taken or written yet
		return -1, err
	}
	lr.free = lr.free[:len(lr.free)-1]
	return slot, nil
}

// release frees a session's slot: its connection is closed, or was lost.
func (lr *liveRegion) release(slot int) error {
	if err := lr.setSession(slot, sessionRec{player: -1}); err != nil {
		return err
	}
	lr.free = append(lr.free, slot)
	return nil
}

func (lr *liveRegion) setSession(slot int, s sessionRec) error {
	encodeSession(lr.rec, s)
	return lr.r.Update(func(tx *shm.Tx) error { return tx.Set(firstSession+slot, lr.rec) })
}

// commit writes what a command changed — its player, the stock of the
// goods it changed — and its session's record, in one transaction. A
// player record written is journaled.
func (lr *liveRegion) commit(w *world, s sessionRec, slot int, who string) error {
	defer func() { lr.dirty = lr.dirty[:0] }()
	return lr.r.Update(func(tx *shm.Tx) error {
		if who != "" {
			i, ok := w.index[who]
			if !ok {
				return fmt.Errorf("live: no player %s", who)
			}
			s.player = int64(i)
			if err := lr.writePlayer(tx, w, i); err != nil {
				return err
			}
		}
		for _, item := range lr.dirty {
			at, ok := lr.goods[item]
			if !ok {
				if len(lr.goods) == maxGoods {
					return fmt.Errorf("live: the region holds %d goods; a patch added more", maxGoods)
				}
				at = firstGood + len(lr.goods)
				lr.goods[item] = at
			}
			encodeGood(lr.rec, item, w.stock[item])
			if err := tx.Set(at, lr.rec); err != nil {
				return err
			}
		}
		encodeSession(lr.rec, s)
		return tx.Set(firstSession+slot, lr.rec)
	})
}

// writePlayer writes player i's record and journals it, unless it did not
// change.
func (lr *liveRegion) writePlayer(tx *shm.Tx, w *world, i int) error {
	if err := encodePlayer(lr.rec, &w.players[i]); err != nil {
		return err
	}
	switch at := firstPlayer + i; {
	case at == lr.r.Len():
		if _, err := tx.Append(lr.rec); err != nil {
			return err
		}
	case bytes.Equal(lr.rec, lr.r.Record(at)):
		return nil
	default:
		if err := tx.Set(at, lr.rec); err != nil {
			return err
		}
	}
	return lr.journal(tx, i)
}

// journalAt is where the journal's entry k is: its record, and the
// offset of its 8 bytes there.
func journalAt(k uint64) (rec, off int) {
	return firstJournal + int(k/journalPerRec)%journalRecords, 8 * int(k%journalPerRec)
}

// journaled is the player index that the journal's entry k names.
func (lr *liveRegion) journaled(k uint64) int {
	at, off := journalAt(k)
	return int(le.Uint64(lr.r.Record(at)[off:]))
}

// journal notes in tx that player i's record was written.
func (lr *liveRegion) journal(tx *shm.Tx, i int) error {
	k := lr.head()
	at, off := journalAt(k)
	copy(lr.jrec, lr.r.Record(at))
	le.PutUint64(lr.jrec[off:], uint64(i))
	if err := tx.Set(at, lr.jrec); err != nil {
		return err
	}
	copy(lr.meta, lr.r.Record(0))
	lr.meta[0] = kindMeta
	le.PutUint64(lr.meta[metaHead:], k+1)
	return tx.Set(0, lr.meta)
}
