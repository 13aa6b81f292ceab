package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"
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

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// moduleRoot finds this module's root from the working directory.
func moduleRoot() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goTool(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	b, err := os.ReadFile(gomod)
	if err != nil || !strings.Contains(string(b), "module "+modulePath+"\n") {
		return "", fmt.Errorf("not inside module %s (go.mod %q): run from its checkout", modulePath, gomod)
	}
	return filepath.Dir(gomod), nil
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
	root, err := moduleRoot()
	if err != nil {
		return b, err
	}
	builds := [][]string{
		{"-o", b.supervisor, "./cmd/supervisor"},
		{"-o", b.gameA, "-ldflags", "-X main.version=" + versionA, "./example-game/gameserver"},
		{"-o", b.gameB, "-tags", "fixedshop", "-ldflags", "-X main.version=" + versionB, "./example-game/gameserver"},
	}
	errs := make([]error, len(builds))
	var wg sync.WaitGroup
	for i, args := range builds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = goBuild(root, args)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return b, err
		}
	}
	return b, nil
}

func goBuild(root string, args []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool(), append([]string{"build"}, args...)...)
	cmd.Dir = root
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %v: %v\n%s", args, err, out)
	}
	return nil
}

// copyFile writes src to dst through a new file renamed over dst, as a
// deployment installs a build: a running copy of dst is not disturbed.
func copyFile(dst, src string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	tmp := dst + ".new"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}
