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

// shimPath is a way into shim mode: "fast" is how the supervisor starts a
// worker (ShimArg first), which the fast path of shim_cgo.go serves when the
// build has it; "go" is RunShim itself, the reference and the fallback.
type shimPath string

var shimPaths = []shimPath{"fast", "go"}

// command is the Command that starts worker (the test binary running helper
// printpid) with argv through path, with env added and files as fds 3, 4, ….
func (sp shimPath) command(t *testing.T, argv []string, files []int, env ...string) *Command {
	t.Helper()
	exe := executable(t)
	if sp == "go" {
		return &Command{Path: exe, Args: append([]string{exe}, argv...), Files: files,
			Env: append(helperEnviron("goshim"), append(env, nextEnv+"=printpid")...)}
	}
	path, args := ShimCommand(exe, argv)
	return &Command{Path: path, Args: args, Env: append(helperEnviron("printpid"), env...), Files: files}
}

// ran is what the worker reports as the shim that started it.
func (sp shimPath) ran() string {
	if sp == "fast" && fastShim {
		return ""
	}
	return "go"
}

// runShim starts c, waits for the worker's report line and its exit status 0,
// and returns the line and the PID.
func runShim(t *testing.T, c *Command, rep *pipe) (string, int) {
	t.Helper()
	r := newReaper(t)
	lines := reportLines(rep)
	p, err := r.Start(c)
	if err != nil {
		t.Fatal(err)
	}
	line := nextLine(t, lines)
	if ws := waitDone(t, p); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("status %s", Describe(ws))
	}
	return line, p.Pid
}

// The shim sets LISTEN_PID (and WATCHDOG_PID) to its own PID and execs the
// worker, which keeps that PID: the worker finds LISTEN_PID equal to its own
// PID, as go-systemd and sd_listen_fds check.
func TestShimSetsListenPIDToWorkerPID(t *testing.T) {
	for _, sp := range shimPaths {
		t.Run(string(sp), func(t *testing.T) {
			rep := newPipe(t)
			exe := executable(t)
			c := sp.command(t, []string{exe, "-worker-flag", "x"}, []int{rep.wfd()},
				"LISTEN_FDS=1", "LISTEN_FDNAMES=report", "LISTEN_PID=1", // a stale value is replaced
				"WATCHDOG_USEC=1000000")
			got, pid := runShim(t, c, rep)
			want := fmt.Sprintf("LISTEN_PID=%d WATCHDOG_PID=%d pid=%d args=%q shim=%q %s=unset holdsexe=false",
				pid, pid, pid, []string{"-worker-flag", "x"}, sp.ran(), EnvExecFD)
			if got != want {
				t.Errorf("worker reported\n%s\nwant\n%s", got, want)
			}
		})
	}
}

// Without LISTEN_FDS and WATCHDOG_USEC there is nothing to claim: the shim
// adds neither variable. Set but empty counts as not set.
func TestShimWithoutSockets(t *testing.T) {
	for _, sp := range shimPaths {
		for _, env := range [][]string{nil, {"LISTEN_FDS=", "WATCHDOG_USEC="}} {
			t.Run(fmt.Sprintf("%s/%q", sp, env), func(t *testing.T) {
				rep := newPipe(t)
				exe := executable(t)
				got, pid := runShim(t, sp.command(t, []string{exe}, []int{rep.wfd()}, env...), rep)
				want := fmt.Sprintf("LISTEN_PID= WATCHDOG_PID= pid=%d args=[] shim=%q %s=unset holdsexe=false", pid, sp.ran(), EnvExecFD)
				if got != want {
					t.Errorf("worker reported\n%s\nwant\n%s", got, want)
				}
			})
		}
	}
}

// With SUPERVISOR_EXEC_FD the shim executes the file open at that fd, not
// the path in argv[0] (a new build may have replaced it since), and neither
// the variable nor the fd reaches the worker.
func TestShimExecFD(t *testing.T) {
	for _, sp := range shimPaths {
		t.Run(string(sp), func(t *testing.T) {
			rep := newPipe(t)
			f, err := os.Open(executable(t))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			gone := filepath.Join(t.TempDir(), "replaced-worker")
			c := sp.command(t, []string{gone, "-x"}, []int{rep.wfd(), int(f.Fd())}, "LISTEN_FDS=1", EnvExecFD+"=4")
			got, pid := runShim(t, c, rep)
			want := fmt.Sprintf("LISTEN_PID=%d WATCHDOG_PID= pid=%d args=%q shim=%q %s=unset holdsexe=false",
				pid, pid, []string{"-x"}, sp.ran(), EnvExecFD)
			if got != want {
				t.Errorf("worker reported\n%s\nwant\n%s", got, want)
			}
		})
	}
}

// A SUPERVISOR_EXEC_FD that is not an fd above stdio is ignored: the worker
// runs from its path. The fast path leaves such values to RunShim.
func TestShimExecFDIgnored(t *testing.T) {
	for _, sp := range shimPaths {
		for _, v := range []string{"", "2", "x4", "4x", "99999999999999999999"} {
			t.Run(fmt.Sprintf("%s/%q", sp, v), func(t *testing.T) {
				rep := newPipe(t)
				exe := executable(t)
				c := sp.command(t, []string{exe}, []int{rep.wfd()}, EnvExecFD+"="+v)
				got, pid := runShim(t, c, rep)
				// Only RunShim runs for these; it leaves the variable set.
				want := fmt.Sprintf("LISTEN_PID= WATCHDOG_PID= pid=%d args=[] shim=%q %s=%s holdsexe=false", pid, "go", EnvExecFD, v)
				if got != want {
					t.Errorf("worker reported\n%s\nwant\n%s", got, want)
				}
			})
		}
	}
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
