package main

import (
	"errors"
	"fmt"
	"slices"
)

// Limits on a map's size. A search keeps 12 bytes per cell, and the largest
// possible path cost (14 per cell) must fit in an int32.
const (
	MaxSide  = 1 << 14 // cells along either side
	MaxCells = 1 << 24 // cells in all
)

// ErrNoFreeCell is returned for a map in which every cell is blocked.
var ErrNoFreeCell = errors.New("map has no free cell")

// Point is a cell of a map: X is the column and Y the row, both from 0 at
// the top left.
type Point struct{ X, Y int }

func (p Point) String() string { return fmt.Sprintf("(%d,%d)", p.X, p.Y) }

// Grid is a rectangular map of free and blocked cells. It is built once,
// by NewGrid, ParseMap or DefaultMap, and is then read-only and safe for
// concurrent use.
//
// Cells are stored row by row with a blocked border one cell wide, so that a
// search steps to a neighbour by adding an offset, without bounds checks.
//
// Connected components are kept per run of free cells, in cell order: each
// run by its first cell and its component's label. A label per cell would
// be four times the size of free, all of it written at every worker's start
// (the page faults alone cost more than decoding the map), for two lookups
// per query.
type Grid struct {
	w, h     int
	pw       int     // padded width, w+2
	free     []bool  // (w+2)*(h+2) cells, border blocked
	runStart []int32 // first cell of each run of free cells, ascending
	runComp  []int32 // component label of each run, from 1
	sizes    []int   // sizes[label] is the number of cells in that component
	nfree    int
}

// NewGrid builds a w×h grid from blocked, which reports whether the cell at
// (x, y) is blocked.
func NewGrid(w, h int, blocked func(x, y int) bool) (*Grid, error) {
	if err := checkSize(w, h); err != nil {
		return nil, err
	}
	g := &Grid{w: w, h: h, pw: w + 2, free: make([]bool, (w+2)*(h+2))}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			if !blocked(x, y) {
				g.free[g.index(x, y)] = true
				g.nfree++
			}
		}
	}
	if g.nfree == 0 {
		return nil, ErrNoFreeCell
	}
	g.label()
	return g, nil
}

func checkSize(w, h int) error {
	switch {
	case w < 1 || h < 1:
		return fmt.Errorf("map is %dx%d; it needs at least one row and one column", w, h)
	case w > MaxSide || h > MaxSide:
		return fmt.Errorf("map is %dx%d; neither side may exceed %d cells", w, h, MaxSide)
	case w*h > MaxCells:
		return fmt.Errorf("map is %dx%d = %d cells; at most %d are supported", w, h, w*h, MaxCells)
	}
	return nil
}

// Width is the number of columns.
func (g *Grid) Width() int { return g.w }

// Height is the number of rows.
func (g *Grid) Height() int { return g.h }

// FreeCells is the number of free cells.
func (g *Grid) FreeCells() int { return g.nfree }

// Contains reports whether p lies on the map.
func (g *Grid) Contains(p Point) bool {
	return p.X >= 0 && p.Y >= 0 && p.X < g.w && p.Y < g.h
}

// Free reports whether p lies on the map and is not blocked.
func (g *Grid) Free(p Point) bool {
	return g.Contains(p) && g.free[g.index(p.X, p.Y)]
}

// Connected reports whether a path exists between the free cells a and b.
// It answers in constant time from the components labelled at build time.
func (g *Grid) Connected(a, b Point) bool {
	if !g.Free(a) || !g.Free(b) {
		return false
	}
	return g.component(g.index(a.X, a.Y)) == g.component(g.index(b.X, b.Y))
}

// component is the label of free cell i: that of the last run starting at
// or before it.
func (g *Grid) component(i int32) int32 {
	k, found := slices.BinarySearch(g.runStart, i)
	if !found {
		k--
	}
	return g.runComp[k]
}

// labels returns a label per cell, 0 for blocked ones.
func (g *Grid) labels() []int32 {
	comp := make([]int32, len(g.free))
	for k, start := range g.runStart {
		end := int32(len(g.free))
		if k+1 < len(g.runStart) {
			end = g.runStart[k+1]
		}
		for i := start; i < end && g.free[i]; i++ {
			comp[i] = g.runComp[k]
		}
	}
	return comp
}

// addRun records free cells from start on as a run in component label.
func (g *Grid) addRun(start int32, label int32) {
	g.runStart = append(g.runStart, start)
	g.runComp = append(g.runComp, label)
}

// LargestComponent is the number of free cells in the largest set of
// mutually reachable cells.
func (g *Grid) LargestComponent() int {
	largest := 0
	for _, n := range g.sizes {
		largest = max(largest, n)
	}
	return largest
}

func (g *Grid) index(x, y int) int32 { return int32((y+1)*g.pw + x + 1) }

func (g *Grid) point(i int32) Point {
	return Point{X: int(i)%g.pw - 1, Y: int(i)/g.pw - 1}
}

// label numbers the connected components. Under the movement rules (no
// corner cutting), a diagonal step is allowed only when both orthogonal
// cells beside it are free, so two cells are connected exactly when they are
// connected by straight steps: a 4-neighbour flood fill finds the components.
func (g *Grid) label() {
	comp := make([]int32, len(g.free))
	g.sizes = []int{0}
	offsets := [4]int32{1, -1, int32(g.pw), -int32(g.pw)}
	var queue []int32
	for start := range g.free {
		if !g.free[start] || comp[start] != 0 {
			continue
		}
		label := int32(len(g.sizes))
		comp[start] = label
		queue = append(queue[:0], int32(start))
		for head := 0; head < len(queue); head++ {
			for _, off := range offsets {
				n := queue[head] + off
				if g.free[n] && comp[n] == 0 {
					comp[n] = label
					queue = append(queue, n)
				}
			}
		}
		g.sizes = append(g.sizes, len(queue))
	}
	for i := range comp {
		if comp[i] != 0 && (i == 0 || comp[i-1] != comp[i]) {
			g.addRun(int32(i), comp[i])
		}
	}
}
