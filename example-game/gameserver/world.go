package main

import (
	"fmt"
	"slices"
	"sync"
)

// The numbers the data needs. The rules' numbers (what WORK pays, the
// goods and their prices) are in the scripts (scripts/*.lua).
const (
	startCoin = 100 // a new player's coins
	maxIDLen  = 64  // player ids: 1 to 64 characters of [A-Za-z0-9_-]
)

// player is one row of the player table. The bag is copy-on-write: a
// purchase replaces it and never changes it in place, so a shallow copy of
// a player, such as an autosave takes, is a complete copy of it.
type player struct {
	id    string
	coin  int64 // negative only through the seed's BUY bug
	level int64
	exp   int64
	bag   []bagItem // ordered by item id; counts above 0
}

type bagItem struct {
	item  int
	count int64
}

func newPlayer(id string) player {
	return player{id: id, coin: startCoin, level: 1}
}

// count returns how many of item the player has.
func (p *player) count(item int) int64 {
	i, ok := slices.BinarySearchFunc(p.bag, item, func(b bagItem, item int) int { return b.item - item })
	if !ok {
		return 0
	}
	return p.bag[i].count
}

// add gives the player one more of item, in a new bag.
func (p *player) add(item int) {
	i, ok := slices.BinarySearchFunc(p.bag, item, func(b bagItem, item int) int { return b.item - item })
	bag := make([]bagItem, len(p.bag), len(p.bag)+1)
	copy(bag, p.bag)
	if ok {
		bag[i].count++
	} else {
		bag = slices.Insert(bag, i, bagItem{item: item, count: 1})
	}
	p.bag = bag
}

// world is the game's data: the player table and the shop's stock, in one
// struct that the snapshot saves and restores. The handlers (game.go) are
// the logic that runs on it; everything here is guarded by mu.
type world struct {
	mu      sync.Mutex
	players []player       // in order of first login
	index   map[string]int // player id → index in players
	stock   map[int]int64  // item id → remain
	changes uint64         // changes since the process started, for autosave
	live    *liveRegion    // --live: the shared-memory copy (live.go); nil otherwise

	defaultStock int64 // the stock of a good that stock does not list yet
}

// newWorld makes a world of restored players and stock, for a shop that
// sells goods (item ids). Goods the stock does not mention (a first start,
// or goods new in these rules) get defaultStock; stock of goods the shop no
// longer sells is dropped.
func newWorld(players []player, stock map[int]int64, goods []int, defaultStock int64) (*world, error) {
	w := &world{players: players, index: make(map[string]int, len(players)), stock: make(map[int]int64, len(goods)),
		defaultStock: defaultStock}
	for i, p := range players {
		if !validID(p.id) {
			return nil, fmt.Errorf("player %d: bad id %q", i, p.id)
		}
		w.index[p.id] = i
		if len(w.index) != i+1 {
			return nil, fmt.Errorf("player %q appears twice", p.id)
		}
	}
	for _, id := range goods {
		remain, ok := stock[id]
		if !ok {
			remain = defaultStock
		}
		w.stock[id] = remain
	}
	return w, nil
}

// remain is the stock of item: defaultStock for a good that a patch of the
// rules added since the world was made. Call with mu held.
func (w *world) remain(item int) int64 {
	if remain, ok := w.stock[item]; ok {
		return remain
	}
	return w.defaultStock
}

// player returns the row of the player called id, adding a new player if
// there is none. Call with mu held; the pointer is valid until the next
// added player.
func (w *world) player(id string) *player {
	if i, ok := w.index[id]; ok {
		return &w.players[i]
	}
	w.index[id] = len(w.players)
	w.players = append(w.players, newPlayer(id))
	w.changes++
	return &w.players[len(w.players)-1]
}

// copyOut copies the data under the lock, for an autosave to write while
// the game goes on: a memmove of the player table (bags are copy-on-write,
// so the copy shares them safely) and the few stock entries. It reuses dst.
func (w *world) copyOut(dst []player) (players []player, stock map[int]int64, changes uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	players = append(dst[:0], w.players...)
	stock = make(map[int]int64, len(w.stock))
	for k, v := range w.stock {
		stock[k] = v
	}
	return players, stock, w.changes
}

// changed returns the change count.
func (w *world) changed() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changes
}

// validID says whether id is 1 to 64 characters of [A-Za-z0-9_-].
func validID(id string) bool {
	if len(id) == 0 || len(id) > maxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
