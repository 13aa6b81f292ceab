package listener_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/procswitch/supervisor/listener"
	"golang.org/x/sys/unix"
)

// The test binary doubles as a process started by systemd socket activation:
// TestMain dispatches on helperEnv to a named helper.
const helperEnv = "LISTENER_TEST_HELPER"

// Variables that configure the "systemd" helper.
const (
	envSpecs    = "LISTENER_TEST_SPECS"    // specs for Open, one a line
	envOwnPID   = "LISTENER_TEST_OWN_PID"  // "1": set LISTEN_PID to the helper's own PID first
	envNonblock = "LISTENER_TEST_NONBLOCK" // "0" or "1": put the inherited fds in that mode first
	envClose    = "LISTENER_TEST_CLOSE"    // "1": Close the set before reporting
)

// helperTimeout bounds every helper process (a race-instrumented binary on a
// busy machine starts in well under a second).
const helperTimeout = 30 * time.Second

func TestMain(m *testing.M) {
	switch name := os.Getenv(helperEnv); name {
	case "":
		os.Exit(m.Run())
	case "systemd":
		os.Exit(helperSystemd())
	default:
		fmt.Fprintf(os.Stderr, "listener test: unknown helper %q\n", name)
		os.Exit(2)
	}
}

// report is what the "systemd" helper prints as JSON on stdout.
type report struct {
	Err         string
	Sockets     []sockReport
	Names       string
	EnvAfter    []string // LISTEN_* variables still set after Open
	FlagsBefore []int    // F_GETFL of each inherited fd before Open
	FlagsAfter  []int    // and after Open and FDs
}

type sockReport struct {
	Name, Network, Address string
	Inherited              bool
	FD                     int
	Cloexec                bool
	Inode                  uint64
}

// helperSystemd plays a program started by systemd socket activation: its fds
// 3… are sockets, LISTEN_FDS and LISTEN_FDNAMES are set by the test, and
// LISTEN_PID, which exec cannot know, is set here to our own PID.
func helperSystemd() int {
	var rep report
	n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	for i := range n {
		fd := 3 + i
		switch os.Getenv(envNonblock) {
		case "0":
			unix.SetNonblock(fd, false)
		case "1":
			unix.SetNonblock(fd, true)
		}
		fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		rep.FlagsBefore = append(rep.FlagsBefore, fl)
	}
	if os.Getenv(envOwnPID) == "1" {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
	var specs []listener.Spec
	if s := os.Getenv(envSpecs); s != "" {
		for i, line := range strings.Split(s, "\n") {
			spec, err := listener.ParseSpec(line, i)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			specs = append(specs, spec)
		}
	}
	set, err := listener.Open(specs)
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LISTEN_") {
			rep.EnvAfter = append(rep.EnvAfter, kv)
		}
	}
	if err != nil {
		rep.Err = err.Error()
	} else {
		set.FDs()
		rep.Names = set.Names()
		for _, s := range set.Sockets {
			fdFlags, _ := unix.FcntlInt(uintptr(s.FD()), unix.F_GETFD, 0)
			ino, _ := s.Inode()
			rep.Sockets = append(rep.Sockets, sockReport{
				Name: s.Name, Network: s.Network, Address: s.Address, Inherited: s.Inherited,
				FD: s.FD(), Cloexec: fdFlags&unix.FD_CLOEXEC != 0, Inode: ino,
			})
		}
	}
	for i := range n {
		fl, _ := unix.FcntlInt(uintptr(3+i), unix.F_GETFL, 0)
		rep.FlagsAfter = append(rep.FlagsAfter, fl)
	}
	if err == nil && os.Getenv(envClose) == "1" {
		if err := set.Close(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		return 1
	}
	return 0
}

// runSystemd runs the "systemd" helper with files as its fds 3, 4, … and the
// given extra environment, and returns its report.
func runSystemd(t *testing.T, files []*os.File, env ...string) report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), helperTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = append(cleanEnv(), helperEnv+"=systemd")
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = files
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		t.Fatalf("helper: %v (ctx: %v)\nstderr: %s", err, ctx.Err(), stderr.String())
	}
	var rep report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("helper output %q: %v\nstderr: %s", stdout.String(), err, stderr.String())
	}
	return rep
}

// cleanEnv is our environment without the variables that would make a helper
// believe it was socket-activated by somebody else. A race-instrumented
// helper would sleep a second at exit (GORACE atexit_sleep_ms): it is told not
// to.
func cleanEnv() []string {
	env := []string{"GORACE=atexit_sleep_ms=0 " + os.Getenv("GORACE")}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LISTEN_") || strings.HasPrefix(kv, helperEnv+"=") ||
			strings.HasPrefix(kv, "LISTENER_TEST_") || strings.HasPrefix(kv, "GORACE=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}
