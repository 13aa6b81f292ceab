package main

import (
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
)

// defaultMapData is the built-in map as generateDefaultMap makes it, with
// its connected components already labelled, run-length encoded. Building
// and labelling the map takes several milliseconds; decoding this takes a
// fraction of one, and a worker's start-up is an upgrade's critical path.
// TestDefaultMapDataIsCurrent fails when it goes stale; then run
// `go test -run TestDefaultMapDataIsCurrent ./example-game/pathfind -update`.
//
//go:embed defaultmap.bin
var defaultMapData []byte

// DefaultMap returns the built-in map.
func DefaultMap() (*Grid, error) {
	g, err := decodeGrid(defaultMapData)
	if err != nil {
		return nil, fmt.Errorf("built-in map: %w (regenerate defaultmap.bin)", err)
	}
	return g, nil
}

// encodeGrid writes width and height, then the padded grid's component
// labels (0 for blocked) as runs: label, length, both uvarints.
func encodeGrid(g *Grid) []byte {
	comp := g.labels()
	b := binary.AppendUvarint(nil, uint64(g.w))
	b = binary.AppendUvarint(b, uint64(g.h))
	for i := 0; i < len(comp); {
		j := i
		for j < len(comp) && comp[j] == comp[i] {
			j++
		}
		b = binary.AppendUvarint(b, uint64(comp[i]))
		b = binary.AppendUvarint(b, uint64(j-i))
		i = j
	}
	return b
}

var errBadMapData = errors.New("malformed map data")

// decodeGrid is on a worker's start-up path, so it is written for speed:
// one byte is the common varint, and blocked runs need no writes (new memory
// is zero).
func decodeGrid(b []byte) (*Grid, error) {
	d := mapDecoder{b: b}
	w, h := d.next(), d.next()
	if d.bad {
		return nil, errBadMapData
	}
	if err := checkSize(w, h); err != nil {
		return nil, err
	}
	n := (w + 2) * (h + 2)
	g := &Grid{w: w, h: h, pw: w + 2, free: make([]bool, n)}
	// Free runs are at most half of all runs, each of two bytes or more: in
	// a row, free cells side by side are in one component, and the border
	// parts the rows, so a blocked run lies between any two free ones. (Data
	// that breaks this only makes append grow.)
	maxRuns := len(d.b) / 4
	g.runStart, g.runComp = make([]int32, 0, maxRuns), make([]int32, 0, maxRuns)
	for i := 0; i < n; {
		label, run := d.next(), d.next()
		if d.bad || run == 0 || run > n-i {
			return nil, errBadMapData
		}
		if label != 0 {
			if label >= len(g.sizes) {
				g.sizes = append(g.sizes, make([]int, label+1-len(g.sizes))...)
			}
			g.sizes[label] += run
			g.nfree += run
			g.addRun(int32(i), int32(label))
			cells := g.free[i : i+run]
			for k := range cells {
				cells[k] = true
			}
		}
		i += run
	}
	if len(d.b) != 0 || g.nfree == 0 {
		return nil, errBadMapData
	}
	return g, nil
}

// mapDecoder reads the uvarints of encoded map data; bad is set, and stays
// set, once one is malformed or out of range.
type mapDecoder struct {
	b   []byte
	bad bool
}

func (d *mapDecoder) next() int {
	if len(d.b) > 0 && d.b[0] < 0x80 {
		v := d.b[0]
		d.b = d.b[1:]
		return int(v)
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || v > MaxCells+1 {
		d.bad = true
		return 0
	}
	d.b = d.b[n:]
	return int(v)
}
