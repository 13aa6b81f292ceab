//go:build race

package test

// raceEnabled says the tests were built with -race; the supervisor under test
// is then built with -race too.
const raceEnabled = true
