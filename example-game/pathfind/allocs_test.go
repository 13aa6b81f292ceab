//go:build !race

// The race detector makes sync.Pool drop items at random, so this test
// only holds without it.

package main

import "testing"

// TestAStarAllocs checks that a search allocates only the path it returns,
// not anything per cell, once the pool is warm.
func TestAStarAllocs(t *testing.T) {
	g := defaultMap(t)
	s := NewSolver(g)
	a, b := farPair(t, g)
	s.Path(a, b)
	if n := testing.AllocsPerRun(20, func() { s.Path(a, b) }); n > 1 {
		t.Errorf("a search makes %v allocations, want 1 (the path)", n)
	}
}
