// Command blackout measures how long the example game server is away during
// a handover upgrade under the supervisor, as the clients see it and as the
// supervisor measures it, for player tables and connection counts of
// different sizes; and the throughput of the snapshot file that carries the
// state across.
//
//	go run ./test/bench/blackout            # the full matrix: 1k..1M players, 100..10k connections
//	go run ./test/bench/blackout --quick    # a smaller one, in about a minute
//	go run ./test/bench/blackout --baseline HEAD~1 --rows 100k/1k   # this tree against HEAD~1
//
// For each size it builds the supervisor and two builds of the game (the
// buggy and the fixed shop, as a real upgrade would alternate), seeds the
// game's snapshot with the players, starts the supervisor in handover mode,
// connects the clients (each logged in as one of the players) and has every
// client send STATUS without pause, one command at a time. Then it upgrades
// a few times with SIGHUP. STATUS answers with the worker's PID, so each
// client sees when its connection moved to the new worker:
//
//   - client blackout: per connection, the time between the last reply of
//     the old worker and the first of the new one (the longest silence among
//     the replies just before the first reply of the new worker: a reply the
//     old worker computed but could not write is written by the new one);
//     the median and the maximum over the connections of each upgrade, then
//     the median (and maximum) of those over the upgrades;
//   - supervisor blackout: the blackout_ms of "upgrade succeeded", from the
//     old worker being told to save until the new one says READY=1.
//
// It also reports the save and restore times the game logs, and the
// snapshot format's write and read throughput through package state.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, errHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "blackout:", err)
		os.Exit(2)
	}
	// SIGINT and SIGTERM end the run cleanly: the supervisor under test is
	// stopped, not orphaned, and a baseline's worktree removed.
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code, err := run(ctx, o)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "blackout:", err)
		os.Exit(1)
	}
	os.Exit(code)
}
