package main

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/procswitch/supervisor/test/bench/benchbuild"
	"github.com/procswitch/supervisor/test/procwatch"
)

const (
	buildTimeout = 5 * time.Minute // for each go build
	benchVersion = "bench"         // pathfind's X-Worker-Version
)

// binaries are the programs under test, built fresh into dir.
type binaries struct {
	dir        string
	supervisor string
	pathfind   string
}

// build is one build of the programs under test.
type build = benchbuild.Build[binaries]

// buildAll builds the supervisor and pathfind of this tree into a new
// temporary directory, or copies them there from prebuilt paths when given;
// with a baseline, it builds those of the baseline revision (or copies the
// baseline's prebuilt ones) into its subdirectory "baseline". The caller
// removes the directory, builds[0].Bins.dir, even on error.
func buildAll(ctx context.Context, o options) ([]*build, error) {
	dir, err := os.MkdirTemp("", "switchbench-")
	if err != nil {
		return nil, err
	}
	// Resolve symlinks so that /proc/PID/exe of our children starts with dir.
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	builds := []*build{{Bins: newBinaries(dir)}}
	if o.compare() {
		builds[0].Tag = "new"
		builds = append(builds, &build{Tag: "baseline", Bins: newBinaries(filepath.Join(dir, "baseline"))})
		if err := os.Mkdir(builds[1].Bins.dir, 0o755); err != nil {
			return builds, err
		}
	}
	if o.compare() { // first, so that a bad revision fails before a build
		if builds[1].Src, err = install(ctx, builds[1], o.baseline, o.baselineSupervisorBin, o.baselinePathfindBin); err != nil {
			return builds, err
		}
	}
	builds[0].Src, err = install(ctx, builds[0], "", o.supervisorBin, o.pathfindBin)
	return builds, err
}

func newBinaries(dir string) binaries {
	return binaries{dir: dir, supervisor: filepath.Join(dir, "supervisor"), pathfind: filepath.Join(dir, "pathfind")}
}

// install builds b's binaries at rev ("" for this tree), except those
// prebuilt, which it copies.
func install(ctx context.Context, b *build, rev, prebuiltSupervisor, prebuiltPathfind string) (benchbuild.Source, error) {
	return benchbuild.Install(ctx, rev, buildTimeout,
		benchbuild.Binary{Build: procwatch.Build{Out: b.Bins.supervisor, Pkg: "./cmd/supervisor"}, Prebuilt: prebuiltSupervisor},
		benchbuild.Binary{Build: procwatch.Build{Out: b.Bins.pathfind, Pkg: "./example-game/pathfind", LDFlags: "-X main.version=" + benchVersion}, Prebuilt: prebuiltPathfind},
	)
}
