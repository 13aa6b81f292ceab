package systemd_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/test/procwatch"
)

// Where things live. The root filesystem is kept under workDir between runs
// (building it takes about 40 s), so is the host directory of binaries bound
// into the container read-only at prefix.
const (
	workDir  = "/var/tmp/procswitch-sysd"
	machine  = "procswitch-sysd"
	prefix   = "/opt/procswitch/bin" // the units' install prefix
	skipEnv  = "SUPERVISOR_SKIP_SYSTEMD"
	bootWait = 90 * time.Second // SYSD_BOOT_TIMEOUT, and more for a first debootstrap
)

var (
	// skipReason, when set, skips every test.
	skipReason string
	// setupErr, when set, fails every test: the container did not come up.
	setupErr error
	// setupReported: a test has shown setupErr in full.
	setupReported bool
	// sysd is the booted container.
	sysd *container
	// builds are the binaries built for the tests.
	builds *buildSet
)

func TestMain(m *testing.M) {
	switch {
	case runtime.GOOS != "linux":
		skipReason = "systemd tests need Linux"
	case os.Getenv(skipEnv) == "1":
		skipReason = skipEnv + "=1 is set"
	case os.Geteuid() != 0:
		skipReason = "systemd tests need root (they boot systemd in a systemd-nspawn container); CI runs them as root"
	}
	if skipReason != "" {
		os.Exit(m.Run())
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	unlock, err := lockWorkDir()
	if err != nil {
		setupErr = err
		return m.Run()
	}
	defer unlock()
	t0 := time.Now()
	sysd, setupErr = setUp()
	if setupErr == nil {
		fmt.Fprintf(os.Stderr, "systemd: container %s up with the units installed in %v\n", machine, time.Since(t0).Round(time.Millisecond))
	}
	code := m.Run()
	if sysd != nil {
		if err := sysd.down(); err != nil {
			fmt.Fprintf(os.Stderr, "systemd: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// need returns the container, skipping or failing the test when there is
// none.
func need(t *testing.T) *container {
	t.Helper()
	if skipReason != "" {
		t.Skip("skipped: " + skipReason)
	}
	if setupErr != nil {
		if setupReported {
			t.Fatal("no systemd container: the setup failed (the first test's failure says how)")
		}
		setupReported = true
		t.Fatalf("no systemd container: %v", setupErr)
	}
	return sysd
}

// setUp builds the binaries, installs the units into the root filesystem
// and boots the container.
func setUp() (*container, error) {
	root, err := procwatch.ModuleRoot("github.com/procswitch/supervisor")
	if err != nil {
		return nil, err
	}
	c := &container{
		script: filepath.Join(root, "test/systemd/systemd-container.sh"),
		dir:    workDir,
		bin:    filepath.Join(workDir, "bin"),
	}
	// A container left running by an interrupted run has this run's binds
	// (the same directories) but stale units: always boot afresh.
	if err := c.down(); err != nil {
		return nil, err
	}
	if builds, err = build(root, c.bin, filepath.Join(workDir, "builds")); err != nil {
		return nil, err
	}
	if err := c.ensureRootfs(); err != nil {
		return nil, err
	}
	if err := installUnits(root, c.rootfs()); err != nil {
		return nil, err
	}
	if err := c.up(); err != nil {
		if downErr := c.down(); downErr != nil { // a container that booted too slowly
			err = fmt.Errorf("%w; additionally, halting it: %v", err, downErr)
		}
		return nil, err
	}
	return c, nil
}

// lockWorkDir takes an exclusive lock on the work directory: two runs at
// once (two checkouts on one machine) would boot the same container.
func lockWorkDir() (func(), error) {
	if err := os.MkdirAll(workDir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(workDir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("another run holds %s/lock after 5 minutes: is another test run using the container?", workDir)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
