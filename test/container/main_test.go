package container_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/procswitch/supervisor/test/procwatch"
)

// helperEnv names the helper that the test binary runs instead of the
// tests (helpers below).
const helperEnv = "PROCSWITCH_CONTAINER_HELPER"

// skipEnv set to 1 skips every test that runs a container.
const skipEnv = "SUPERVISOR_SKIP_CONTAINER"

var helpers = map[string]func() error{
	"cgexec": helperCgexec, // joins cgroups, then execs systemd-nspawn
	"forker": helperForker, // a worker whose child outlives it
	"orphan": helperOrphan, // that child
}

var (
	// skipReason, when set, skips the tests that run processes as root.
	skipReason string
	// img is the image's root filesystem, built by TestMain; nil with
	// imgErr set when it could not be.
	img    *image
	imgErr error
)

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		fn, ok := helpers[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "container test: unknown helper %q\n", name)
			os.Exit(2)
		}
		if err := fn(); err != nil {
			fmt.Fprintf(os.Stderr, "container test: helper %s (pid %d): %v\n", name, os.Getpid(), err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if os.Getenv("LISTEN_FDS") != "" || os.Getenv("NOTIFY_SOCKET") != "" {
		// Started as a worker without the helper variable: do not run the
		// tests recursively.
		fmt.Fprintf(os.Stderr, "test binary run as a worker without %s\n", helperEnv)
		os.Exit(2)
	}
	switch {
	case runtime.GOOS != "linux":
		skipReason = "container tests need Linux"
	case os.Getenv(skipEnv) == "1":
		skipReason = skipEnv + "=1 is set"
	case os.Geteuid() != 0:
		skipReason = "container tests need root (systemd-nspawn, unshare --pid); CI runs them as root"
	}
	if skipReason != "" {
		os.Exit(m.Run())
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// Whatever fds we inherited (a shell or CI runner may leak some) must
	// not reach the containers.
	if err := procwatch.CloseInheritedFDs(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "supervisor-container-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	t0 := time.Now()
	img, imgErr = buildImage(dir)
	if imgErr == nil {
		fmt.Fprintf(os.Stderr, "container: binaries built in %v\n", time.Since(t0).Round(time.Millisecond))
	}
	code := m.Run()
	if err := procwatch.StopAll(10 * time.Second); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// needImage returns the image, skipping the test without root or Linux
// and failing it when the binaries could not be built.
func needImage(t *testing.T) *image {
	t.Helper()
	if skipReason != "" {
		t.Skip("skipped: " + skipReason)
	}
	if imgErr != nil {
		t.Fatalf("cannot run: %v", imgErr)
	}
	return img
}

// needTool returns the path of a program the test runs, skipping the test
// when it is not installed.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("skipped: %s not found (Debian package %s): %v", name, pkg, err)
	}
	return p
}

// copyFile writes src's content to dst through a temporary file renamed
// over it, as a deployment installs a build: a running copy of dst is not
// disturbed.
func copyFile(dst, src string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".new")
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}
