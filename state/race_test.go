//go:build race

package state

// raceEnabled: the race detector slows the large tests tenfold.
const raceEnabled = true
