package test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/procswitch/supervisor/test/procwatch"
)

// helperEnv names the helper worker that the test binary runs instead of the
// tests (see helpers_test.go).
const helperEnv = "PROCSWITCH_TEST_HELPER"

// buildTimeout bounds each go build.
const buildTimeout = 5 * time.Minute

// The binaries under test, built by TestMain.
var (
	binDir        string
	supervisorBin string
	// supervisorFailpoint is the supervisor built with the failpoint tag:
	// a new image of it fails its re-exec preflight
	supervisorFailpoint string
	pathfindV1          string // pathfind built with -X main.version=v1
	pathfindV2          string // and with v2
	helperBin           string // this test binary
	buildErr            error  // why the binaries are missing, if they are
)

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		os.Exit(runHelper(name))
	}
	if os.Getenv("LISTEN_FDS") != "" || os.Getenv("NOTIFY_SOCKET") != "" {
		// Started as a worker without the helper variable: do not run the
		// tests recursively.
		fmt.Fprintf(os.Stderr, "test binary run as a worker without %s\n", helperEnv)
		os.Exit(2)
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	// Workers orphaned by a supervisor that dies are re-parented to us, so that
	// we can wait for them and reap them: PID 1 here does not.
	if err := procwatch.BecomeSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer reapAll()
	// Whatever fds we inherited (a shell or CI runner may leak some) must not
	// reach the supervisor: start it as systemd would, with stdio only.
	if err := procwatch.CloseInheritedFDs(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "supervisor-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	buildErr = buildAll()
	return m.Run()
}

func buildAll() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	helperBin = exe
	var race []string
	if raceEnabled {
		race = []string{"-race"}
	}
	supervisorBin = filepath.Join(binDir, "supervisor")
	supervisorFailpoint = filepath.Join(binDir, "supervisor-failpoint")
	pathfindV1 = filepath.Join(binDir, "pathfind-v1")
	pathfindV2 = filepath.Join(binDir, "pathfind-v2")
	builds := []struct {
		out, pkg string
		flags    []string
	}{
		{supervisorBin, "./cmd/supervisor", race},
		{supervisorFailpoint, "./cmd/supervisor", append([]string{"-tags", "failpoint"}, race...)},
		{pathfindV1, "./example-game/pathfind", []string{"-ldflags", "-X main.version=v1"}},
		{pathfindV2, "./example-game/pathfind", []string{"-ldflags", "-X main.version=v2"}},
	}
	for _, b := range builds {
		if err := goBuild(b.out, b.pkg, b.flags...); err != nil {
			return err
		}
	}
	return nil
}

// goBuild builds pkg, relative to the module root, into out.
func goBuild(out, pkg string, flags ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	goTool := procwatch.GoTool()
	args := append([]string{"build", "-o", out}, flags...)
	cmd := exec.CommandContext(ctx, goTool, append(args, pkg)...)
	cmd.Dir = ".." // the module root; tests run in their package directory
	cmd.WaitDelay = 5 * time.Second
	output, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, output)
	}
	return nil
}

// needBinaries skips nothing: a test that needs the binaries fails when they
// could not be built.
func needBinaries(t *testing.T) {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("cannot run: %v", buildErr)
	}
}

// reapAll reaps whatever children are left when the tests end.
func reapAll() {
	pids, err := procwatch.ReapOrphans("", 5*time.Second)
	if len(pids) > 0 {
		fmt.Fprintf(os.Stderr, "reaped leftover processes %v\n", pids)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
}

// copyFile writes src's content to dst through a temporary file and a rename,
// so that a running copy of dst is not disturbed.
func copyFile(dst, src string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".install-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}
