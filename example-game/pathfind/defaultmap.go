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
	b := binary.AppendUvarint(nil, uint64(g.w))
	b = binary.AppendUvarint(b, uint64(g.h))
	for i := 0; i < len(g.comp); {
		j := i
		for j < len(g.comp) && g.comp[j] == g.comp[i] {
			j++
		}
		b = binary.AppendUvarint(b, uint64(g.comp[i]))
		b = binary.AppendUvarint(b, uint64(j-i))
		i = j
	}
	return b
}

var errBadMapData = errors.New("malformed map data")

func decodeGrid(b []byte) (*Grid, error) {
	next := func() (int, error) {
		v, n := binary.Uvarint(b)
		if n <= 0 || v > MaxCells+1 {
			return 0, errBadMapData
		}
		b = b[n:]
		return int(v), nil
	}
	w, err := next()
	if err != nil {
		return nil, err
	}
	h, err := next()
	if err != nil {
		return nil, err
	}
	if err := checkSize(w, h); err != nil {
		return nil, err
	}
	g := &Grid{w: w, h: h, pw: w + 2, free: make([]bool, (w+2)*(h+2)), comp: make([]int32, (w+2)*(h+2))}
	for i := 0; i < len(g.comp); {
		label, err := next()
		if err != nil {
			return nil, err
		}
		run, err := next()
		if err != nil || run == 0 || i+run > len(g.comp) {
			return nil, errBadMapData
		}
		for len(g.sizes) <= label {
			g.sizes = append(g.sizes, 0)
		}
		for k := i; k < i+run; k++ {
			g.comp[k] = int32(label)
			g.free[k] = label != 0
		}
		if label != 0 {
			g.sizes[label] += run
			g.nfree += run
		}
		i += run
	}
	if len(b) != 0 || g.nfree == 0 {
		return nil, errBadMapData
	}
	g.sizes[0] = 0
	return g, nil
}
