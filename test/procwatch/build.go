package procwatch

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// GoTool is the go command: the one on PATH, else the one in $GOROOT, else
// the Go installation's usual place.
func GoTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if root := os.Getenv("GOROOT"); root != "" {
		return filepath.Join(root, "bin", "go")
	}
	return "/usr/local/go/bin/go"
}

// ModuleRoot finds the directory of the go.mod of the module around the
// working directory, and checks that it is module modulePath.
func ModuleRoot(modulePath string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, GoTool(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside a Go module: run from the %s checkout", modulePath)
	}
	b, err := os.ReadFile(gomod)
	if err != nil {
		return "", err
	}
	if !strings.Contains(string(b), "module "+modulePath+"\n") {
		return "", fmt.Errorf("%s is not module %s: run from its checkout", gomod, modulePath)
	}
	return filepath.Dir(gomod), nil
}

// Build is one go build: package Pkg (such as "./cmd/supervisor", relative
// to the directory GoBuild runs in) into the binary Out.
type Build struct {
	Out     string
	Pkg     string
	Tags    string // -tags, if not ""
	LDFlags string // -ldflags, if not ""
	Race    bool   // -race
}

// Args are the arguments of go build.
func (b Build) Args() []string {
	args := []string{"build", "-o", b.Out}
	if b.Tags != "" {
		args = append(args, "-tags", b.Tags)
	}
	if b.LDFlags != "" {
		args = append(args, "-ldflags", b.LDFlags)
	}
	if b.Race {
		args = append(args, "-race")
	}
	return append(args, b.Pkg)
}

// GoBuild runs the builds in dir, in parallel, each bounded by timeout, and
// returns the first error, with the output of go build.
func GoBuild(dir string, timeout time.Duration, builds ...Build) error {
	errs := make([]error, len(builds))
	var wg sync.WaitGroup
	for i, b := range builds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = goBuild(dir, timeout, b)
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

func goBuild(dir string, timeout time.Duration, b Build) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, GoTool(), b.Args()...)
	cmd.Dir = dir
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(b.Args(), " "), err, out)
	}
	return nil
}

// Install copies src to dst through a new file renamed over dst, as a
// deployment installs a build: a running copy of dst is not disturbed.
func Install(dst, src string) error {
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
