package main

import (
	"path/filepath"
	"time"

	"github.com/procswitch/supervisor/test/procwatch"
)

const (
	modulePath   = "github.com/procswitch/supervisor"
	buildTimeout = 5 * time.Minute // each go build
)

// The versions the two game builds report; upgrades alternate them.
const (
	versionA = "bench-a-buggy"
	versionB = "bench-b-fixed"
)

// binaries are the programs under test.
type binaries struct {
	supervisor   string
	gameA, gameB string
}

// buildAll builds (or copies) the binaries into dir.
func buildAll(o options, dir string) (binaries, error) {
	b := binaries{
		supervisor: filepath.Join(dir, "supervisor"),
		gameA:      filepath.Join(dir, "gameserver-a"),
		gameB:      filepath.Join(dir, "gameserver-b"),
	}
	if o.supBin != "" && o.gameA != "" {
		for dst, src := range map[string]string{b.supervisor: o.supBin, b.gameA: o.gameA, b.gameB: o.gameB} {
			if err := copyFile(dst, src); err != nil {
				return b, err
			}
		}
		return b, nil
	}
	root, err := procwatch.ModuleRoot(modulePath)
	if err != nil {
		return b, err
	}
	return b, procwatch.GoBuild(root, buildTimeout,
		procwatch.Build{Out: b.supervisor, Pkg: "./cmd/supervisor"},
		procwatch.Build{Out: b.gameA, Pkg: "./example-game/gameserver", LDFlags: "-X main.version=" + versionA},
		procwatch.Build{Out: b.gameB, Pkg: "./example-game/gameserver", Tags: "fixedshop", LDFlags: "-X main.version=" + versionB},
	)
}

// copyFile writes src to dst through a new file renamed over dst, as a
// deployment installs a build: a running copy of dst is not disturbed.
func copyFile(dst, src string) error { return procwatch.Install(dst, src) }
