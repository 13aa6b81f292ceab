package main

import "math/rand/v2"

// The built-in map: a DefaultSize×DefaultSize world of rooms, generated from
// a fixed seed so that every worker of every build serves the same map.
const (
	DefaultSize = 512
	roomSize    = 32 // walls every roomSize cells, both ways
	vaults      = 8  // sealed rooms, unreachable from outside
	defaultSeed = 0x5eed_5160_2026
)

// generateDefaultMap generates the built-in map (DefaultMap loads it
// precomputed, labels included). Walls on a roomSize grid split the
// world into rooms; each wall between two rooms has one or two doors 2 to 4
// cells wide, and about one wall in eight is missing, making halls. Random
// rectangular blocks then cover about a fifth of the floor. Doors are kept
// clear, so nearly every free cell is reachable from every other, but paths
// must find their way around blocks and through doors. The exceptions are a
// few vaults: small walled squares with no door, whose insides no path
// reaches.
func generateDefaultMap() (*Grid, error) {
	const n = DefaultSize
	blocked := make([]bool, n*n)
	set := func(x, y int, v bool) {
		if x >= 0 && y >= 0 && x < n && y < n {
			blocked[y*n+x] = v
		}
	}
	rng := rand.New(rand.NewPCG(defaultSeed, defaultSeed>>7))
	var doors [][2]int // cells to clear again after scattering blocks
	for w := roomSize; w < n; w += roomSize {
		for start := 0; start < n; start += roomSize {
			if rng.IntN(8) == 0 {
				continue // no wall here: two rooms make a hall
			}
			for i := start; i < start+roomSize && i < n; i++ {
				set(w, i, true) // vertical wall at x = w
				set(i, w, true) // horizontal wall at y = w
			}
			doors = append(doors, wallDoors(rng, w, start, true)...)
			doors = append(doors, wallDoors(rng, w, start, false)...)
		}
	}
	for range n * n / 60 {
		x, y := rng.IntN(n), rng.IntN(n)
		bw, bh := 1+rng.IntN(5), 1+rng.IntN(5)
		for dy := range bh {
			for dx := range bw {
				set(x+dx, y+dy, true)
			}
		}
	}
	for _, d := range doors {
		set(d[0], d[1], false)
	}
	for range vaults {
		addVault(rng, set)
	}
	return NewGrid(n, n, func(x, y int) bool { return blocked[y*n+x] })
}

// wallDoors returns the cells of the doors of the wall segment at w from
// start, together with the cells in front of and behind them, so that
// blocks cannot seal a door. vertical: the wall is x = w.
func wallDoors(rng *rand.Rand, w, start int, vertical bool) [][2]int {
	var cells [][2]int
	for range 1 + rng.IntN(2) {
		width := 2 + rng.IntN(3)
		at := start + 1 + rng.IntN(roomSize-1-width)
		for i := at; i < at+width; i++ {
			for across := w - 1; across <= w+1; across++ {
				if vertical {
					cells = append(cells, [2]int{across, i})
				} else {
					cells = append(cells, [2]int{i, across})
				}
			}
		}
	}
	return cells
}

// addVault walls off a square of side 6 to 10 inside a random room, clear
// of its doors, and clears the floor within.
func addVault(rng *rand.Rand, set func(x, y int, blocked bool)) {
	const rooms = DefaultSize / roomSize
	side := 6 + rng.IntN(5)
	// Rooms span roomSize-1 cells after their wall; keep 2 cells from it.
	x0 := rng.IntN(rooms)*roomSize + 3 + rng.IntN(roomSize-5-side)
	y0 := rng.IntN(rooms)*roomSize + 3 + rng.IntN(roomSize-5-side)
	for y := y0; y < y0+side; y++ {
		for x := x0; x < x0+side; x++ {
			edge := x == x0 || y == y0 || x == x0+side-1 || y == y0+side-1
			set(x, y, edge)
		}
	}
}
