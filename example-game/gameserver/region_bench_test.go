package main

import "testing"

// BenchmarkReadAhead is what a crash-restarted --live worker does before
// it can serve: read the world of 100k players from the region. Warm, in
// a loop, it is several times faster than in a fresh process, whose heap
// is all new pages: the figure that matters comes from
// test/bench/blackout --compare-live (the game's "read ahead" log line).
func BenchmarkReadAhead(b *testing.B) {
	w := benchWorld(100_000)
	lr, err := createRegion(w, 200_000)
	if err != nil {
		b.Fatal(err)
	}
	defer lr.r.Close()
	f := lr.r.File()
	for b.Loop() {
		p, err := prepareRegion(f, embeddedGoods, 1_000_000, false)
		if err != nil {
			b.Fatal(err)
		}
		p.lr.r.Close()
	}
}
