package main

import (
	"fmt"
	"os"
	"slices"

	"github.com/procswitch/supervisor/state/shm"
)

// liveRegion is the world's shared-memory copy (region.go). Its methods
// run with the world's lock held: the region has one writer.
type liveRegion struct {
	r     *shm.Region
	goods map[int]int // item → its record
	free  []int       // free session slots, the lowest last
	rec   []byte      // scratch record
	dirty []int       // goods whose stock changed in the command running
}

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
	lr := &liveRegion{r: r, goods: map[int]int{}, rec: make([]byte, regionRecordSize)}
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
	for range maxSessions {
		rec := make([]byte, regionRecordSize)
		encodeSession(rec, sessionRec{player: -1})
		recs = append(recs, rec)
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
// store) and reads the world back from it: players, stock, and the
// sessions in use, by slot.
func openRegion(f *os.File) (lr *liveRegion, players []player, stock map[int]int64, sessions map[int]sessionRec, err error) {
	r, err := shm.Open(f, shm.Layout{Name: regionLayoutName, Version: regionVersion, RecordSize: regionRecordSize})
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("live: the stored region: %w", err)
	}
	if r.Len() < firstPlayer {
		r.Close()
		return nil, nil, nil, nil, fmt.Errorf("live: the stored region has %d records, fewer than its %d fixed ones", r.Len(), firstPlayer)
	}
	lr = &liveRegion{r: r, goods: map[int]int{}, rec: make([]byte, regionRecordSize)}
	stock = map[int]int64{}
	for i := firstGood; i < firstGood+maxGoods; i++ {
		if item, remain, ok := decodeGood(r.Record(i)); ok {
			stock[item], lr.goods[item] = remain, i
		}
	}
	players = make([]player, 0, r.Len()-firstPlayer)
	for i := firstPlayer; i < r.Len(); i++ {
		p, err := decodePlayer(r.Record(i))
		if err != nil {
			r.Close()
			return nil, nil, nil, nil, fmt.Errorf("live: the stored region's record %d: %w", i, err)
		}
		players = append(players, p)
	}
	sessions = map[int]sessionRec{}
	lr.free = make([]int, 0, maxSessions)
	for slot := maxSessions - 1; slot >= 0; slot-- {
		if rec := r.Record(firstSession + slot); rec[0] == kindSession && rec[1] == 1 {
			sessions[slot] = decodeSession(rec)
		} else {
			lr.free = append(lr.free, slot)
		}
	}
	return lr, players, stock, sessions, nil
}

// take allocates a session slot for a new connection; false when all are
// in use.
func (lr *liveRegion) take() (int, error) {
	if len(lr.free) == 0 {
		return -1, fmt.Errorf("live: all %d session slots are in use", maxSessions)
	}
	slot := lr.free[len(lr.free)-1]
	if err := lr.setSession(slot, sessionRec{used: true, player: -1}); err != nil {
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
// goods it changed — and its session's record, in one transaction.
func (lr *liveRegion) commit(w *world, s sessionRec, slot int, who string) error {
	defer func() { lr.dirty = lr.dirty[:0] }()
	return lr.r.Update(func(tx *shm.Tx) error {
		if who != "" {
			i, ok := w.index[who]
			if !ok {
				return fmt.Errorf("live: no player %s", who)
			}
			if err := encodePlayer(lr.rec, &w.players[i]); err != nil {
				return err
			}
			if firstPlayer+i == lr.r.Len() {
				if _, err := tx.Append(lr.rec); err != nil {
					return err
				}
			} else if err := tx.Set(firstPlayer+i, lr.rec); err != nil {
				return err
			}
			s.player = int64(i)
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
