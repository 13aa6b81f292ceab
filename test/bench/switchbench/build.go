package main

import (
	"os"
	"path/filepath"
	"time"

	"github.com/procswitch/supervisor/test/procwatch"
)

const (
	modulePath   = "github.com/procswitch/supervisor"
	buildTimeout = 5 * time.Minute // for each go build
	benchVersion = "bench"         // pathfind's X-Worker-Version
)

// binaries are the programs under test, built fresh into dir.
type binaries struct {
	dir        string
	supervisor string
	pathfind   string
}

// buildAll builds the supervisor and pathfind into a new temporary
// directory, or copies them there from prebuilt paths when given; the
// caller removes bins.dir.
func buildAll(prebuiltSupervisor, prebuiltPathfind string) (binaries, error) {
	dir, err := os.MkdirTemp("", "switchbench-")
	if err != nil {
		return binaries{}, err
	}
	// Resolve symlinks so that /proc/PID/exe of our children starts with dir.
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	b := binaries{dir: dir, supervisor: filepath.Join(dir, "supervisor"), pathfind: filepath.Join(dir, "pathfind")}
	if prebuiltSupervisor != "" && prebuiltPathfind != "" {
		if err := procwatch.Install(b.supervisor, prebuiltSupervisor); err != nil {
			return b, err
		}
		return b, procwatch.Install(b.pathfind, prebuiltPathfind)
	}
	root, err := procwatch.ModuleRoot(modulePath)
	if err != nil {
		return b, err
	}
	if err := install(root, b.supervisor, prebuiltSupervisor, procwatch.Build{Pkg: "./cmd/supervisor"}); err != nil {
		return b, err
	}
	return b, install(root, b.pathfind, prebuiltPathfind, procwatch.Build{Pkg: "./example-game/pathfind", LDFlags: "-X main.version=" + benchVersion})
}

// install copies prebuilt to out, or builds there when prebuilt is "".
func install(root, out, prebuilt string, build procwatch.Build) error {
	if prebuilt != "" {
		return procwatch.Install(out, prebuilt)
	}
	build.Out = out
	return procwatch.GoBuild(root, buildTimeout, build)
}
