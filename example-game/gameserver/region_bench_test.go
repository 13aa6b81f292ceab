package main

import (
	"testing"

	"github.com/procswitch/supervisor/state/shm"
)

// BenchmarkReadAhead is what a crash-restarted --live worker does before
// it can serve: read the world of 100k players from the region.
func BenchmarkReadAhead(b *testing.B) {
	w := benchWorld(100_000)
	lr, err := createRegion(w, 200_000)
	if err != nil {
		b.Fatal(err)
	}
	defer lr.r.Close()
	f := lr.r.File()
	for b.Loop() {
		p, err := prepareRegion(f, embeddedGoods, 1_000_000)
		if err != nil {
			b.Fatal(err)
		}
		p.lr.r.Close()
	}
	_ = shm.View
}
