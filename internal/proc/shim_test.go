package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
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
	return sp.commandFor(t, "printpid", argv, files, env...)
}

// commandFor is command for a worker that runs helper: printpid for the test
// binary, interp for a script of installScript's.
func (sp shimPath) commandFor(t *testing.T, helper string, argv []string, files []int, env ...string) *Command {
	t.Helper()
	exe := executable(t)
	if sp == "go" {
		return &Command{Path: exe, Args: append([]string{exe}, argv...), Files: files,
			Env: append(helperEnviron("goshim"), append(env, nextEnv+"="+helper)...)}
	}
	path, args := ShimCommand(exe, argv)
	return &Command{Path: path, Args: args, Env: append(helperEnviron(helper), env...), Files: files}
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

// installScript puts a "#!" script at path whose interpreter is the test
// binary (helper interp, which reports body): by rename, as an install
// does, so that an fd held on the file it replaces keeps the old one.
func installScript(t *testing.T, path, body string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte("#!"+executable(t)+"\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// With SUPERVISOR_EXEC_FD the shim executes the file open at that fd, not
// the file now at the path in argv[0], another build installed since: a
// binary, which does not inherit the fd, and a "#!" script, whose
// interpreter gets /proc/self/fd/N as the script's path and so inherits the
// fd to open it. Neither sees the variable. Without it, a script runs from
// its path, which its interpreter then gets.
func TestShimRunsHeldFile(t *testing.T) {
	cases := []struct {
		name   string
		held   string // "binary" (the test binary), "script", or "" for none
		helper string
		want   string // the worker's report line; {pid}, {shim} and {worker} filled in
	}{
		{"binary", "binary", "printpid",
			`LISTEN_PID={pid} WATCHDOG_PID= pid={pid} args=["-x"] shim={shim} SUPERVISOR_EXEC_FD=unset holdsexe=false`},
		{"script", "script", "interp",
			`script=/proc/self/fd/4 body="old" args=["-x"] LISTEN_PID={pid} pid={pid} shim={shim} SUPERVISOR_EXEC_FD=unset`},
		{"script by path", "", "interp",
			`script={worker} body="new" args=["-x"] LISTEN_PID={pid} pid={pid} shim={shim} SUPERVISOR_EXEC_FD=unset`},
	}
	for _, sp := range shimPaths {
		for _, tc := range cases {
			t.Run(string(sp)+"/"+tc.name, func(t *testing.T) {
				rep := newPipe(t)
				worker := filepath.Join(t.TempDir(), "worker")
				files, env := []int{rep.wfd()}, []string{"LISTEN_FDS=1"}
				if tc.held != "" {
					held := executable(t)
					if tc.held == "script" {
						installScript(t, worker, "old")
						held = worker
					}
					f, err := os.Open(held)
					if err != nil {
						t.Fatal(err)
					}
					defer f.Close()
					files, env = append(files, int(f.Fd())), append(env, EnvExecFD+"=4")
				}
				installScript(t, worker, "new")
				got, pid := runShim(t, sp.commandFor(t, tc.helper, []string{worker, "-x"}, files, env...), rep)
				want := strings.NewReplacer("{pid}", strconv.Itoa(pid), "{shim}", strconv.Quote(sp.ran()),
					"{worker}", worker).Replace(tc.want)
				if got != want {
					t.Errorf("worker reported\n%s\nwant\n%s", got, want)
				}
			})
		}
	}
}

// Given a held file it cannot execute, the shim exits with ExitCodeFromShim
// and says why, and never runs the file at the worker's path instead (here
// the test binary, which would report): with the fast path too, whose
// failed exec must leave RunShim the variable to refuse with. A malformed
// fd number counts as a held file the shim cannot execute.
func TestShimHeldFileFails(t *testing.T) {
	cases := []struct {
		name, value string
		mode        os.FileMode // of the held file at fd 4; 0 for none
		reason      string
	}{
		{"not executable", "4", 0o644, "permission denied"},
		{"not a program", "4", 0o755, "exec format error"},
		{"not open", "1000", 0, "bad file descriptor"},
		{"stdio", "2", 0, "not an fd number above stdio"},
		{"signed", "+4", 0o755, "not an fd number above stdio"},
		{"trailing junk", "4x", 0o755, "not an fd number above stdio"},
		{"leading junk", "x4", 0o755, "not an fd number above stdio"},
		{"too large", "99999999999999999999", 0o755, "not an fd number above stdio"},
	}
	for _, sp := range shimPaths {
		for _, tc := range cases {
			t.Run(string(sp)+"/"+tc.name, func(t *testing.T) {
				rep := newPipe(t)
				files := []*os.File{rep.w}
				if tc.mode != 0 {
					held := filepath.Join(t.TempDir(), "held")
					if err := os.WriteFile(held, []byte("not a program\n"), tc.mode); err != nil {
						t.Fatal(err)
					}
					f, err := os.Open(held)
					if err != nil {
						t.Fatal(err)
					}
					defer f.Close()
					files = append(files, f)
				}
				exe := executable(t)
				c := sp.command(t, []string{exe, "-x"}, nil, "LISTEN_FDS=1", EnvExecFD+"="+tc.value)
				code, stderr := shimExit(t, c, files...)
				rep.w.Close()
				if ran, _ := io.ReadAll(rep.r); len(ran) > 0 {
					t.Errorf("the program at the worker's path ran: %q", ran)
				}
				if code != ExitCodeFromShim {
					t.Errorf("exit status %d, want %d", code, ExitCodeFromShim)
				}
				for _, s := range []string{"cannot execute worker " + exe, EnvExecFD + "=" + tc.value, tc.reason, "not run in its place"} {
					if !strings.Contains(stderr, s) {
						t.Errorf("stderr %q should say %q", stderr, s)
					}
				}
			})
		}
	}
}

// A SUPERVISOR_EXEC_FD set but empty counts as not set: the worker runs from
// its path, and the variable does not reach it.
func TestShimEmptyExecFD(t *testing.T) {
	for _, sp := range shimPaths {
		t.Run(string(sp), func(t *testing.T) {
			rep := newPipe(t)
			exe := executable(t)
			got, pid := runShim(t, sp.command(t, []string{exe}, []int{rep.wfd()}, EnvExecFD+"="), rep)
			want := fmt.Sprintf("LISTEN_PID= WATCHDOG_PID= pid=%d args=[] shim=%q %s=unset holdsexe=false", pid, sp.ran(), EnvExecFD)
			if got != want {
				t.Errorf("worker reported\n%s\nwant\n%s", got, want)
			}
		})
	}
}

// shimRun runs the shim on argv and returns its exit code and stderr.
func shimRun(t *testing.T, argv ...string) (int, string) {
	t.Helper()
	path, args := ShimCommand(executable(t), argv)
	return shimExit(t, &Command{Path: path, Args: args, Env: append(helperEnviron(""), "LISTEN_FDS=0")})
}

// shimExit runs c, with files as fds 3, 4, … (c.Files is not used), through
// exec.Cmd (no Reaper is live in these tests, so nothing else waits for the
// child), and returns its exit code and stderr. The shim must fail.
func shimExit(t *testing.T, c *Command, files ...*os.File) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Path)
	cmd.Args, cmd.Env, cmd.ExtraFiles = c.Args, c.Env, files
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("shim %q: %v, want it to exit with a status (ctx: %v)", c.Args, err, ctx.Err())
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

// The shim starts the worker with the reload signal ignored, so that a
// worker that does not handle it (this Go helper does not) shows it as
// ignored rather than dying of it; without SUPERVISOR_RELOAD_SIGNAL nothing
// more is ignored than the worker inherits (under nohup, SIGHUP).
func TestShimIgnoresReloadSignal(t *testing.T) {
	// A Go worker keeps only SIGHUP and SIGINT ignored: its runtime
	// catches the others (SIGUSR1 too) whatever it started with.
	const hup, intr = 1 << 0, 1 << 1 // SIGHUP (1) and SIGINT (2): bit N-1
	inherited := ownSigIgn(t) & (hup | intr)
	for _, sp := range shimPaths {
		for _, tc := range []struct {
			env  string
			want uint64
		}{
			{"SUPERVISOR_RELOAD_SIGNAL=SIGHUP", inherited | hup},
			{"SUPERVISOR_RELOAD_SIGNAL=SIGINT", inherited | intr},
			{"", inherited},
		} {
			t.Run(string(sp)+"/"+tc.env, func(t *testing.T) {
				rep := newPipe(t)
				var env []string
				if tc.env != "" {
					env = append(env, tc.env)
				}
				got, _ := runShim(t, sp.commandFor(t, "sigign", []string{executable(t)}, []int{rep.wfd()}, env...), rep)
				if want := fmt.Sprintf("SigIgn=%016x shim=%q", tc.want, sp.ran()); got != want {
					t.Errorf("worker reported %s, want %s", got, want)
				}
			})
		}
	}
}

// ownSigIgn is the test process's own SigIgn mask.
func ownSigIgn(t *testing.T) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigIgn:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no SigIgn in /proc/self/status")
	return 0
}
