package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestShimCommand(t *testing.T) {
	argv := []string{"/srv/game/worker", "-config", "/etc/game.toml"}
	path, args := ShimCommand("/usr/bin/supervisor", argv)
	if path != "/usr/bin/supervisor" {
		t.Errorf("path %q", path)
	}
	if ExitCodeFromShim != 127 {
		t.Errorf("ExitCodeFromShim = %d, want 127 as a shell uses", ExitCodeFromShim)
	}
	want := []string{"/usr/bin/supervisor", ShimArg, "/srv/game/worker", "-config", "/etc/game.toml"}
	if !slices.Equal(args, want) {
		t.Errorf("args %q, want %q", args, want)
	}
	if argv[0] != "/srv/game/worker" || len(argv) != 3 {
		t.Errorf("ShimCommand changed its argument: %q", argv)
	}
}

// The shim sets LISTEN_PID (and WATCHDOG_PID) to its own PID and execs the
// worker, which keeps that PID: the worker finds LISTEN_PID equal to its own
// PID, as go-systemd and sd_listen_fds check.
func TestShimSetsListenPIDToWorkerPID(t *testing.T) {
	r := newReaper(t)
	rep := newPipe(t)
	lines := reportLines(rep)
	exe := executable(t)
	path, args := ShimCommand(exe, []string{exe, "-worker-flag", "x"})
	env := append(helperEnviron("printpid"),
		"LISTEN_FDS=1", "LISTEN_FDNAMES=report", "LISTEN_PID=1", // a stale value is replaced
		"WATCHDOG_USEC=1000000")
	p, err := r.Start(&Command{Path: path, Args: args, Env: env, Files: []int{rep.wfd()}})
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("LISTEN_PID=%d WATCHDOG_PID=%d pid=%d args=%q", p.Pid, p.Pid, p.Pid, []string{"-worker-flag", "x"})
	if got := nextLine(t, lines); got != want {
		t.Errorf("worker reported %q, want %q", got, want)
	}
	if ws := waitDone(t, p); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("status %s", Describe(ws))
	}
}

// Without LISTEN_FDS and WATCHDOG_USEC there is nothing to claim: the shim
// adds neither variable.
func TestShimWithoutSockets(t *testing.T) {
	r := newReaper(t)
	rep := newPipe(t)
	lines := reportLines(rep)
	exe := executable(t)
	path, args := ShimCommand(exe, []string{exe})
	p, err := r.Start(&Command{Path: path, Args: args, Env: helperEnviron("printpid"), Files: []int{rep.wfd()}})
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("LISTEN_PID= WATCHDOG_PID= pid=%d args=[]", p.Pid)
	if got := nextLine(t, lines); got != want {
		t.Errorf("worker reported %q, want %q", got, want)
	}
	waitDone(t, p)
}

// shimRun runs the shim with exec.Cmd (no Reaper is live in this test, so
// nothing else waits for the child) and returns its exit code and stderr.
func shimRun(t *testing.T, argv ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	exe := executable(t)
	path, args := ShimCommand(exe, argv)
	cmd := exec.CommandContext(ctx, path, args[1:]...)
	cmd.Env = append(helperEnviron(""), "LISTEN_FDS=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("shim %q: %v, want it to exit with a status (ctx: %v)", argv, err, ctx.Err())
	}
	return ee.ExitCode(), stderr.String()
}

func TestShimMissingWorker(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-worker")
	code, stderr := shimRun(t, missing, "-flag")
	if code != ExitCodeFromShim {
		t.Errorf("exit status %d, want %d", code, ExitCodeFromShim)
	}
	if !strings.Contains(stderr, "cannot execute worker "+missing) || !strings.Contains(stderr, "no such file") {
		t.Errorf("stderr %q should name the worker and the reason", stderr)
	}
}

func TestShimNotExecutable(t *testing.T) {
	notExec := filepath.Join(t.TempDir(), "worker")
	if err := os.WriteFile(notExec, []byte("#!/bin/false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stderr := shimRun(t, notExec)
	if code != ExitCodeFromShim || !strings.Contains(stderr, "permission denied") {
		t.Errorf("exit status %d, stderr %q; want %d and permission denied", code, stderr, ExitCodeFromShim)
	}
}

func TestShimNoWorker(t *testing.T) {
	code, stderr := shimRun(t)
	if code != 2 || !strings.Contains(stderr, ShimArg) || !strings.Contains(stderr, "internal exec shim") {
		t.Errorf("exit status %d, stderr %q; want 2 and a line saying what the shim is", code, stderr)
	}
}
