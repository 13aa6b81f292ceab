package systemd_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// units are the files this directory ships.
var units = []string{
	"pathfind.service",
	"pathfind-activated.socket",
	"pathfind-activated.service",
	"gameserver.service",
}

// binaries are the programs the units run, under the documented prefix.
var binaries = []string{"supervisor", "pathfind", "gameserver"}

const prefix = "opt/procswitch/bin"

// TestVerify runs systemd-analyze verify on every unit, then security, in a scratch root
// holding the units, the host's own system units (verify loads the targets
// the units depend on) and stand-ins for the binaries under the prefix
// (verify checks that ExecStart= names an executable). Any complaint fails
// the test: verify exits 0 on a warning such as an unknown setting.
func TestVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (Debian: apt-get install systemd): the units are not verified")
	}
	sysUnits := systemUnitDir()
	if sysUnits == "" {
		t.Skip("no system unit directory (/usr/lib/systemd/system or /lib/systemd/system) for verify to load targets from")
	}
	root := t.TempDir()
	copyDir(t, sysUnits, filepath.Join(root, "usr/lib/systemd/system"))
	etc := filepath.Join(root, "etc/systemd/system")
	mkdir(t, etc)
	for _, u := range units {
		data, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(etc, u), data, 0o644)
	}
	mkdir(t, filepath.Join(root, prefix))
	for _, b := range binaries {
		write(t, filepath.Join(root, prefix, b), []byte("#!/bin/sh\nexit 0\n"), 0o755)
	}

	out, err := run(analyze, append([]string{"verify", "--root=" + root}, units...)...)
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("systemd-analyze verify %s: %v\n%s", strings.Join(units, " "), err, out)
	}

	// The sandbox must not regress: systemd-analyze security rates each
	// service at most 2.0 ("OK"; 1.6 offline as written).
	for _, u := range units {
		if !strings.HasSuffix(u, ".service") {
			continue
		}
		out, err := run(analyze, "security", "--offline=yes", "--root="+root, "--threshold="+strconv.Itoa(maxExposure), "--no-pager", u)
		switch {
		case strings.Contains(out, "unrecognized option"):
			t.Skipf("this systemd-analyze has no security --offline (systemd 250 and later): %s", strings.TrimSpace(out))
		case err != nil:
			t.Errorf("systemd-analyze security %s: %v: exposure above %d.%d?\n%s", u, err, maxExposure/10, maxExposure%10, out)
		}
	}
}

// maxExposure is the highest overall exposure level accepted, times ten
// (systemd-analyze security --threshold).
const maxExposure = 20

// run runs systemd-analyze, bounded, and returns its output.
func run(analyze string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, analyze, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// systemUnitDir is where the host keeps its packaged system units.
func systemUnitDir() string {
	for _, d := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if _, err := os.Stat(filepath.Join(d, "sysinit.target")); err == nil {
			return d
		}
	}
	return ""
}

// copyDir copies the tree src to dst, links as links.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	cmd := exec.Command("cp", "-a", src+"/.", dst)
	mkdir(t, dst)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("copy %s: %v\n%s", src, err, out)
	}
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}
