package main

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
)

func benchWorld(n int) *world {
	players := make([]player, n)
	for i := range players {
		players[i] = player{id: "player-" + strconv.Itoa(i), coin: int64(i % 1000), level: 1 + int64(i%7), exp: int64(i % 700),
			bag: []bagItem{{1001, int64(i % 5)}, {1002, 3}}}
	}
	w, err := newWorld(players, nil, embeddedGoods, 1_000_000)
	if err != nil {
		panic(err)
	}
	return w
}

// BenchmarkAutosaveCopy is what an autosave holds the game's lock for:
// copying the table of 1M players.
func BenchmarkAutosaveCopy(b *testing.B) {
	w := benchWorld(1_000_000)
	var spare []player
	for b.Loop() {
		spare, _, _ = w.copyOut(spare)
	}
}

// BenchmarkSaveRestore writes and reads back a snapshot of 1M players.
func BenchmarkSaveRestore(b *testing.B) {
	w := benchWorld(1_000_000)
	path := filepath.Join(b.TempDir(), "snap")
	snap := &snapshot{kind: kindAutosave, players: w.players, stock: w.stock}
	for b.Loop() {
		if err := writeSnapshot(context.Background(), path, "bench", snap); err != nil {
			b.Fatal(err)
		}
		res, err := readSnapshot(path)
		if err != nil || len(res.players) != len(w.players) {
			b.Fatal(err)
		}
		if _, err := newWorld(res.players, res.stock, embeddedGoods, 0); err != nil {
			b.Fatal(err)
		}
	}
}
