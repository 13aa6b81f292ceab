package main

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/procswitch/supervisor/test/bench/benchbuild"
	"github.com/procswitch/supervisor/test/procwatch"
)

const buildTimeout = 5 * time.Minute // each go build

// The versions the two game builds report; upgrades alternate them.
const (
	versionA = "bench-a-buggy"
	versionB = "bench-b-fixed"
)

// binaries are the programs under test.
type binaries struct {
	supervisor   string
	gameA, gameB string
	live         bool // run the game with --live (--compare-live)
}

// build is one build of the programs under test.
type build = benchbuild.Build[binaries]

// buildAll builds (or copies) this tree's binaries into dir; with a
// baseline, it builds (or copies) the baseline's into dir/baseline too.
func buildAll(ctx context.Context, o options, dir string) ([]*build, error) {
	builds := []*build{{Bins: newBinaries(dir)}}
	if o.compare() {
		builds[0].Tag = "new"
		builds = append(builds, &build{Tag: "baseline", Bins: newBinaries(filepath.Join(dir, "baseline"))})
		if err := os.Mkdir(filepath.Join(dir, "baseline"), 0o755); err != nil {
			return nil, err
		}
	}
	var err error
	if o.compare() { // first, so that a bad revision fails before a build
		if builds[1].Src, err = install(ctx, builds[1], o.baseline, o.baseSupBin, o.baseGameA, o.baseGameB); err != nil {
			return builds, err
		}
	}
	builds[0].Src, err = install(ctx, builds[0], "", o.supBin, o.gameA, o.gameB)
	if o.compareLive { // one build, two ways of running it
		builds[0].Tag, builds[0].Bins.live = "live", true
		builds = append(builds, &build{Tag: "file", Bins: builds[0].Bins, Src: builds[0].Src})
		builds[1].Bins.live = false
	}
	return builds, err
}

func newBinaries(dir string) binaries {
	return binaries{
		supervisor: filepath.Join(dir, "supervisor"),
		gameA:      filepath.Join(dir, "gameserver-a"),
		gameB:      filepath.Join(dir, "gameserver-b"),
	}
}

// install builds b's binaries at rev ("" for this tree), except those
// prebuilt, which it copies.
func install(ctx context.Context, b *build, rev, supervisor, gameA, gameB string) (benchbuild.Source, error) {
	return benchbuild.Install(ctx, rev, buildTimeout,
		benchbuild.Binary{Build: procwatch.Build{Out: b.Bins.supervisor, Pkg: "./cmd/supervisor"}, Prebuilt: supervisor},
		benchbuild.Binary{Build: procwatch.Build{Out: b.Bins.gameA, Pkg: "./example-game/gameserver", LDFlags: "-X main.version=" + versionA}, Prebuilt: gameA},
		benchbuild.Binary{Build: procwatch.Build{Out: b.Bins.gameB, Pkg: "./example-game/gameserver", Tags: "fixedshop", LDFlags: "-X main.version=" + versionB}, Prebuilt: gameB},
	)
}

// copyFile writes src to dst through a new file renamed over dst, as a
// deployment installs a build: a running copy of dst is not disturbed.
func copyFile(dst, src string) error { return procwatch.Install(dst, src) }
