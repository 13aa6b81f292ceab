package main

import (
	"bytes"
	"flag"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
)

var update = flag.Bool("update", false, "rewrite defaultmap.bin from the generator")

func TestDefaultMapDataIsCurrent(t *testing.T) {
	g, err := generateDefaultMap()
	if err != nil {
		t.Fatal(err)
	}
	want := encodeGrid(g)
	if *update {
		if err := os.WriteFile("defaultmap.bin", want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if !bytes.Equal(defaultMapData, want) {
		t.Fatal("defaultmap.bin is not what generateDefaultMap makes: run go test -run TestDefaultMapDataIsCurrent -update")
	}
	d, err := DefaultMap()
	if err != nil {
		t.Fatal(err)
	}
	if d.w != g.w || d.h != g.h || d.nfree != g.nfree || !slices.Equal(d.free, g.free) ||
		!slices.Equal(d.runStart, g.runStart) || !slices.Equal(d.runComp, g.runComp) || !slices.Equal(d.sizes, g.sizes) {
		t.Fatal("the decoded built-in map differs from the generated one")
	}
}

func TestDecodeGridRejectsMalformedData(t *testing.T) {
	good := encodeGrid(mustGenerate(t))
	for _, b := range [][]byte{nil, good[:1], good[:len(good)/2], append(slices.Clone(good), 1, 1), {0xff, 0xff, 0xff}} {
		if _, err := decodeGrid(b); err == nil {
			t.Errorf("decodeGrid of %d bytes: no error", len(b))
		}
	}
}

// Any grid survives encoding and decoding, components included: random maps
// of every density, so that runs are short and long, and components many.
func TestDecodeGridRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for m := range 200 {
		w, h := 1+rng.IntN(40), 1+rng.IntN(40)
		c := randomCells(rng, w, h, rng.Float64())
		c[rng.IntN(h)][rng.IntN(w)] = false // at least one free cell
		g := c.grid(t)
		d, err := decodeGrid(encodeGrid(g))
		if err != nil {
			t.Fatalf("map %d (%dx%d): %v", m, w, h, err)
		}
		if d.w != g.w || d.h != g.h || d.nfree != g.nfree || !slices.Equal(d.free, g.free) ||
			!slices.Equal(d.runStart, g.runStart) || !slices.Equal(d.runComp, g.runComp) || !slices.Equal(d.sizes, g.sizes) {
			t.Fatalf("map %d (%dx%d): the decoded grid differs from the encoded one", m, w, h)
		}
		comp := g.labels()
		for range 50 {
			a, b := Point{rng.IntN(w), rng.IntN(h)}, Point{rng.IntN(w), rng.IntN(h)}
			ia, ib := g.index(a.X, a.Y), g.index(b.X, b.Y)
			want := c.free(a.X, a.Y) && c.free(b.X, b.Y) && comp[ia] == comp[ib]
			if got := d.Connected(a, b); got != want {
				t.Fatalf("map %d: Connected(%v, %v) = %v, want %v", m, a, b, got, want)
			}
		}
	}
}

func mustGenerate(t *testing.T) *Grid {
	g, err := generateDefaultMap()
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func BenchmarkDefaultMap(b *testing.B) {
	for b.Loop() {
		DefaultMap()
	}
}

func BenchmarkGenerateDefaultMap(b *testing.B) {
	for b.Loop() {
		generateDefaultMap()
	}
}
