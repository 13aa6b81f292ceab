// Package procwatch starts processes for the end-to-end tests (those of
// package test and of test/game) and the benchmarks (switchbench and
// blackout) and watches them from the outside: it reads their
// output line by line (JSON lines parsed, as the supervisor writes them with
// --log-format json), waits with a bound for a line that matches, and reads
// what /proc says about a process: its state and parent, memory, fds,
// children and zombies.
//
// Every process started by Start or Run is registered until it has been
// waited for. Any other child of ours is an orphan, such as a worker
// re-parented to us (see BecomeSubreaper) when its supervisor died, and
// ReapOrphans kills and reaps it.
//
// GoBuild builds the binaries under test, with tags, ldflags or -race, and
// Install puts one in place as a deployment does.
//
// It runs on Linux only, like the supervisor it watches.
package procwatch
