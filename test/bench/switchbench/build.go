package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
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

// goTool is the go command: the one on PATH, else the one of this toolchain.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// moduleRoot finds the directory of this module's go.mod from the working
// directory.
func moduleRoot() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goTool(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside a Go module: run switchbench from the %s checkout", modulePath)
	}
	b, err := os.ReadFile(gomod)
	if err != nil {
		return "", err
	}
	if !strings.Contains(string(b), "module "+modulePath+"\n") {
		return "", fmt.Errorf("%s is not module %s: run switchbench from its checkout", gomod, modulePath)
	}
	return filepath.Dir(gomod), nil
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
		if err := copyFile(b.supervisor, prebuiltSupervisor); err != nil {
			return b, err
		}
		return b, copyFile(b.pathfind, prebuiltPathfind)
	}
	root, err := moduleRoot()
	if err != nil {
		return b, err
	}
	if err := install(root, b.supervisor, prebuiltSupervisor, "./cmd/supervisor"); err != nil {
		return b, err
	}
	return b, install(root, b.pathfind, prebuiltPathfind, "./example-game/pathfind", "-ldflags", "-X main.version="+benchVersion)
}

// install copies prebuilt to out, or builds pkg there when prebuilt is "".
func install(root, out, prebuilt, pkg string, flags ...string) error {
	if prebuilt != "" {
		return copyFile(out, prebuilt)
	}
	return goBuild(root, out, pkg, flags...)
}

func copyFile(dst, src string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

func goBuild(root, out, pkg string, flags ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	args := append([]string{"build", "-o", out}, flags...)
	cmd := exec.CommandContext(ctx, goTool(), append(args, pkg)...)
	cmd.Dir = root
	cmd.WaitDelay = 5 * time.Second
	output, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, output)
	}
	return nil
}
