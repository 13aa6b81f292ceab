// Package game holds end-to-end tests of the example game server under the
// supervisor in handover mode: real processes, real sockets, and bots that
// check every reply against what they know.
package game

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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
)

// bins are the programs under test, built by TestMain.
var bins struct {
	dir        string
	supervisor string
	buggy      string // the game with the seed's shop bug
	fixed      string // the game built with -tags fixedshop
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
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "prctl(PR_SET_CHILD_SUBREAPER): %v\n", err)
		return 1
	}
	defer reapAll()
	// Start the supervisor as systemd would: with stdio only.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		fmt.Fprintf(os.Stderr, "close_range: %v\n", err)
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
	var race []string
	if raceEnabled {
		race = []string{"-race"}
	}
	builds := [][]string{
		append([]string{"-o", bins.supervisor}, append(race, "./cmd/supervisor")...),
		append([]string{"-o", bins.buggy, "-ldflags", "-X main.version=" + buggyVersion}, append(race, "./example-game/gameserver")...),
		append([]string{"-o", bins.fixed, "-tags", "fixedshop", "-ldflags", "-X main.version=" + fixedVersion}, append(race, "./example-game/gameserver")...),
	}
	errs := make([]error, len(builds))
	var wg sync.WaitGroup
	for i, args := range builds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = goBuild(args)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// goBuild runs go build with args in the module root, bounded.
func goBuild(args []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), buildBound)
	defer cancel()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.CommandContext(ctx, goTool, append([]string{"build"}, args...)...)
	cmd.Dir = "../.." // the module root; tests run in their package directory
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %v: %v\n%s", args, err, out)
	}
	return nil
}

// needBinaries fails the test when the binaries could not be built.
func needBinaries(t *testing.T) {
	t.Helper()
	if bins.err != nil {
		t.Fatalf("cannot run: %v", bins.err)
	}
}
