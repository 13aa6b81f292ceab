package main

import (
	"bytes"
	"flag"
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
		!slices.Equal(d.comp, g.comp) || !slices.Equal(d.sizes, g.sizes) {
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
