//go:build race

package game

// raceEnabled says the tests run with -race; the binaries under test are
// then built with -race too.
const raceEnabled = true
