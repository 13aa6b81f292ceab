// Package game holds end-to-end tests of the example game server under the
// supervisor in handover mode: real processes, real sockets, and bots that
// check every reply against what they know.
package game

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/procswitch/supervisor/test/procwatch"
)

// helperEnv makes the test binary run as a helper worker (helpers_test.go)
// instead of the tests.
const helperEnv = "PROCSWITCH_GAMETEST_HELPER"

const (
	buildBound = 5 * time.Minute  // each go build
	waitBound  = 30 * time.Second // every wait for a log line, a reply or a process
	stopBound  = 15 * time.Second // a supervisor's graceful stop
)

// The versions the two builds of the game report.
const (
	buggyVersion = "v1-buggy"
	fixedVersion = "v2-fixed"
	layoutV2     = "v3-layout2" // the fixed shop, its --live region in layout 2
)

// bins are the programs under test, built by TestMain.
var bins struct {
	dir        string
	supervisor string
	buggy      string // the game with the seed's shop bug
	fixed      string // the game built with -tags fixedshop
	layout2    string // the game built with -tags fixedshop,regionv2: a new --live region layout
	layout2bad string // layout2 that exits once it has migrated the region (-tags failaftermigrate)
	helper     string // this test binary
	err        error  // why they are missing, if they are
}

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		os.Exit(runHelper(name))
	}
	if os.Getenv("LISTEN_FDS") != "" || os.Getenv("NOTIFY_SOCKET") != "" {
		fmt.Fprintf(os.Stderr, "test binary run as a worker without %s\n", helperEnv)
		os.Exit(2)
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	// Workers orphaned by a supervisor that dies are re-parented to us, so
	// that we reap them.
	if err := procwatch.BecomeSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer reapAll()
	// Start the supervisor as systemd would: with stdio only.
	if err := procwatch.CloseInheritedFDs(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "gametest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bins.err = buildAll(dir)
	return m.Run()
}

// buildAll builds the supervisor and both games, in parallel, with the race
// detector when the tests have it.
func buildAll(dir string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	bins.dir, bins.helper = dir, exe
	bins.supervisor = filepath.Join(dir, "supervisor")
	bins.buggy = filepath.Join(dir, "gameserver-buggy")
	bins.fixed = filepath.Join(dir, "gameserver-fixed")
	bins.layout2 = filepath.Join(dir, "gameserver-layout2")
	bins.layout2bad = filepath.Join(dir, "gameserver-layout2bad")
	// The module root; tests run in their package directory.
	return procwatch.GoBuild("../..", buildBound,
		procwatch.Build{Out: bins.supervisor, Pkg: "./cmd/supervisor", Race: raceEnabled},
		procwatch.Build{Out: bins.buggy, Pkg: "./example-game/gameserver", LDFlags: "-X main.version=" + buggyVersion, Race: raceEnabled},
		procwatch.Build{Out: bins.fixed, Pkg: "./example-game/gameserver", Tags: "fixedshop", LDFlags: "-X main.version=" + fixedVersion, Race: raceEnabled},
		procwatch.Build{Out: bins.layout2, Pkg: "./example-game/gameserver", Tags: "fixedshop,regionv2", LDFlags: "-X main.version=" + layoutV2, Race: raceEnabled},
		procwatch.Build{Out: bins.layout2bad, Pkg: "./example-game/gameserver", Tags: "fixedshop,regionv2,failaftermigrate", LDFlags: "-X main.version=" + layoutV2, Race: raceEnabled},
	)
}

// needBinaries fails the test when the binaries could not be built.
func needBinaries(t *testing.T) {
	t.Helper()
	if bins.err != nil {
		t.Fatalf("cannot run: %v", bins.err)
	}
}
