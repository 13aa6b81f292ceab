package proc

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"

	"github.com/procswitch/supervisor/internal/contract"
	"golang.org/x/sys/unix"
)

// ShimArg is the first argument that puts the supervisor's binary in shim
// mode: `supervisor ShimArg WORKER [ARGS...]`.
const ShimArg = "__supervisor-exec-worker"

// EnvExecFD, set for the shim only, names an fd of the worker's file to
// execute instead of the path in argv[0]: the file the supervisor held open
// for a generation whose path has since been given to another build. Given
// one, the shim runs that file or nothing; it never falls back to the path,
// which would start the other build under the old generation's name.
//
// A binary is executed through /proc/self/fd/N with the fd close-on-exec, so
// the worker does not inherit it. A "#!" script cannot be: the kernel hands
// its interpreter the path the shim executed, and the interpreter opens that
// path after the exec. So for a script the fd stays open in the worker, and
// the script sees $0 (and its interpreter's script argument) as
// /proc/self/fd/N, not as the worker's path; the worker's own argv[0] is
// dropped, as for any script. A script that needs its path or directory
// should take it from its configuration, not from $0.
const EnvExecFD = "SUPERVISOR_EXEC_FD"

// ShimCommand returns the argv that starts argv (worker path first) through
// the shim in the binary at shim (the supervisor's own executable).
func ShimCommand(shim string, argv []string) (path string, args []string) {
	return shim, append([]string{shim, ShimArg}, argv...)
}

// RunShim is the whole of shim mode. os/exec cannot set an environment
// variable after fork, and LISTEN_PID must equal the worker's PID; so the
// shim, already running as that PID, sets LISTEN_PID (and WATCHDOG_PID) to
// its own PID and execs the worker, which keeps the PID. It returns only on
// failure, with the exit status to use.
//
// Where the C library allows (cgo with glibc), shim_cgo.go does the same
// before the Go runtime starts, and RunShim runs only when that could not:
// it is the reference, and reports the failures.
func RunShim(argv []string) int {
	if len(argv) == 0 {
		fmt.Fprintln(os.Stderr, "supervisor: "+ShimArg+" is the supervisor's internal exec shim; run supervisor -- WORKER instead")
		return 2
	}
	pid := strconv.Itoa(os.Getpid())
	if os.Getenv("LISTEN_FDS") != "" {
		os.Setenv("LISTEN_PID", pid)
	}
	if os.Getenv("WATCHDOG_USEC") != "" {
		os.Setenv("WATCHDOG_PID", pid)
	}
	ignoreReloadSignal()
	held := os.Getenv(EnvExecFD)
	os.Unsetenv(EnvExecFD) // for the shim only
	if held == "" {
		err := unix.Exec(argv[0], argv, os.Environ())
		fmt.Fprintf(os.Stderr, "supervisor: cannot execute worker %s: %v\n", argv[0], err)
		return ExitCodeFromShim
	}
	path, err := heldPath(held)
	if err == nil {
		err = unix.Exec(path, argv, os.Environ())
	}
	fmt.Fprintf(os.Stderr, "supervisor: cannot execute worker %s from the file the supervisor held open for it (%s=%s): %v%s; "+
		"the file now at that path is another build and is not run in its place: upgrade to it to start workers again\n",
		argv[0], EnvExecFD, held, err, heldHint(err))
	return ExitCodeFromShim
}

// ignoreReloadSignal starts the worker with the reload signal
// (SUPERVISOR_RELOAD_SIGNAL) ignored, a disposition that survives exec. A
// worker that handles it installs its handler over that; one that does not
// (a C program, or a Go program without handoff, whose runtime would exit on
// SIGHUP) keeps it ignored, and /proc/PID/status says so, so the supervisor
// refuses a reload for it instead of killing it. (A Go program keeps only
// SIGHUP and SIGINT ignored: its runtime catches the others itself, so with
// another --reload-signal a Go worker must handle it.) shim_cgo.go does the
// same.
func ignoreReloadSignal() {
	if sig, err := contract.ParseDrainSignal(os.Getenv(contract.EnvReloadSignal)); err == nil {
		signal.Ignore(sig)
	}
}

// heldPath readies the held file at fd for exec (value is EnvExecFD's) and
// returns the path that executes it: close-on-exec for a binary, not for a
// script, as EnvExecFD says. shim_cgo.go does the same in C.
func heldPath(value string) (string, error) {
	fd, err := strconv.ParseUint(value, 10, 31) // digits only, up to INT_MAX
	if err != nil || fd <= 2 {
		return "", fmt.Errorf("%q is not an fd number above stdio", value)
	}
	var magic [2]byte
	n, err := unix.Pread(int(fd), magic[:], 0)
	if err != nil {
		return "", fmt.Errorf("read fd %d: %w", fd, err)
	}
	flag := unix.FD_CLOEXEC
	if n == 2 && string(magic[:]) == "#!" {
		flag = 0
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, flag); err != nil {
		return "", fmt.Errorf("fd %d: %w", fd, err)
	}
	return "/proc/self/fd/" + strconv.FormatUint(fd, 10), nil
}

// heldHint is what to check for the failures of the held file that have a
// likely cause.
func heldHint(err error) string {
	if errors.Is(err, unix.ENOENT) {
		return " (is /proc mounted?)"
	}
	return ""
}

// closeInheritedFDs marks every fd from 3 up close-on-exec, so that fds the
// supervisor inherited from whoever started it (a shell, a CI runner) never
// reach a worker: a worker gets stdio and its sockets, nothing else. It runs
// before the first Start; NewReaper does.
func closeInheritedFDs() {
	err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return
	}
	// Kernels before 5.11: walk the fd table.
	entries, _ := os.ReadDir("/proc/self/fd")
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
}
