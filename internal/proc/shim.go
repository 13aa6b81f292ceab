package proc

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// ShimArg is the first argument that puts the supervisor's binary in shim
// mode: `supervisor ShimArg WORKER [ARGS...]`.
const ShimArg = "__supervisor-exec-worker"

// EnvExecFD, set for the shim only, names an fd of the binary to execute
// instead of the path in argv[0].
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
	path := argv[0]
	if fd, err := strconv.Atoi(os.Getenv(EnvExecFD)); err == nil && fd > 2 {
		// The generation's own binary, replaced at its path since: exec the
		// file the supervisor held open. Close-on-exec, so it does not leak.
		os.Unsetenv(EnvExecFD)
		unix.CloseOnExec(fd)
		path = "/proc/self/fd/" + strconv.Itoa(fd)
	}
	err := unix.Exec(path, argv, os.Environ())
	fmt.Fprintf(os.Stderr, "supervisor: cannot execute worker %s: %v\n", argv[0], err)
	return ExitCodeFromShim
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
