package systemd_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/procswitch/supervisor/test/procwatch"
)

// units are the files of systemd/ that the tests install.
var units = []string{"pathfind.service", "pathfind-activated.socket", "pathfind-activated.service", "gameserver.service"}

// buildSet holds the builds: static (CGO_ENABLED=0, so the container's libc
// does not matter), in dir; the ones the units run are installed in bin,
// the directory bound at prefix.
type buildSet struct {
	dir string
	bin string
}

// The builds, by file name in buildSet.dir.
const (
	supervisorBuild = "supervisor"
	loadclientBuild = "loadclient"
	pathfindV1      = "pathfind-v1"
	pathfindV2      = "pathfind-v2"
	gameV1          = "gameserver-v1"
	gameV2          = "gameserver-v2"
	brokenExits     = "broken-exits"  // a worker that exits at once, status 3
	brokenNoExec    = "broken-noexec" // a file that is not executable
)

func build(root, bin, dir string) (*buildSet, error) {
	for _, d := range []string{bin, dir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	b := &buildSet{dir: dir, bin: bin}
	jobs := []struct {
		out, pkg string
		flags    []string
	}{
		{supervisorBuild, "./cmd/supervisor", nil},
		{loadclientBuild, "./test/systemd/loadclient", nil},
		{pathfindV1, "./example-game/pathfind", []string{"-ldflags", "-X main.version=v1"}},
		{pathfindV2, "./example-game/pathfind", []string{"-ldflags", "-X main.version=v2"}},
		{gameV1, "./example-game/gameserver", []string{"-ldflags", "-X main.version=v1"}},
		{gameV2, "./example-game/gameserver", []string{"-tags", "fixedshop", "-ldflags", "-X main.version=v2"}},
	}
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			args := append(append([]string{"build", "-o", filepath.Join(dir, j.out)}, j.flags...), j.pkg)
			cmd := exec.CommandContext(ctx, procwatch.GoTool(), args...)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	broken := "#!/bin/sh\necho 'broken build: exits at once' >&2\nexit 3\n"
	if err := os.WriteFile(filepath.Join(dir, brokenExits), []byte(broken), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, brokenNoExec), []byte("not a program\n"), 0o644); err != nil {
		return nil, err
	}
	return b, b.installDefaults()
}

// installDefaults installs what the units run at the start of every test.
func (b *buildSet) installDefaults() error {
	for name, src := range map[string]string{
		"supervisor": supervisorBuild,
		"loadclient": loadclientBuild,
		"pathfind":   pathfindV1,
		"gameserver": gameV1,
	} {
		if err := b.install(name, src); err != nil {
			return err
		}
	}
	return nil
}

// install puts build src at prefix/name as a deployment does: a new file
// renamed over the old one, which a running process does not notice. The
// mode is the build's (a non-executable build stays so).
func (b *buildSet) install(name, src string) error {
	data, err := os.ReadFile(filepath.Join(b.dir, src))
	if err != nil {
		return err
	}
	st, err := os.Stat(filepath.Join(b.dir, src))
	if err != nil {
		return err
	}
	dst := filepath.Join(b.bin, name)
	tmp := filepath.Join(b.bin, "."+name+".new")
	if err := os.WriteFile(tmp, data, st.Mode().Perm()); err != nil {
		return err
	}
	if err := os.Chmod(tmp, st.Mode().Perm()); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// installT is install for a test, which restores the defaults at its end.
func (b *buildSet) installT(t *testing.T, name, src string) {
	t.Helper()
	if err := b.install(name, src); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.installDefaults(); err != nil {
			t.Error(err)
		}
	})
}

// installUnits copies the units into the root filesystem, and removes what
// a previous run may have left: drop-ins, enablement links, state, journal.
func installUnits(root, rootfs string) error {
	etc := filepath.Join(rootfs, "etc/systemd/system")
	for _, u := range units {
		data, err := os.ReadFile(filepath.Join(root, "systemd", u))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(etc, u), data, 0o644); err != nil {
			return err
		}
		if err := os.RemoveAll(filepath.Join(etc, u+".d")); err != nil {
			return err
		}
		// `systemctl enable` in a run that was interrupted
		wants, err := filepath.Glob(filepath.Join(etc, "*.wants", u))
		if err != nil {
			return err
		}
		for _, w := range wants {
			if err := os.Remove(w); err != nil {
				return err
			}
		}
		name := strings.TrimSuffix(strings.TrimSuffix(u, ".service"), ".socket")
		for _, d := range []string{"var/lib/private/" + name, "var/lib/" + name} {
			if err := os.RemoveAll(filepath.Join(rootfs, d)); err != nil {
				return err
			}
		}
	}
	// The journal is persistent in this root filesystem: start each run with
	// an empty one (the tests read it by invocation, so this only saves space).
	old, err := filepath.Glob(filepath.Join(rootfs, "var/log/journal/*"))
	if err != nil {
		return err
	}
	for _, d := range old {
		if err := os.RemoveAll(d); err != nil {
			return err
		}
	}
	return nil
}
