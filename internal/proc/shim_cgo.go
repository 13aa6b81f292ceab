//go:build cgo && linux

package proc

// The exec shim's fast path. Shim mode runs on every worker start, and an
// upgrade waits for it: booting the Go runtime and every package's init
// before RunShim costs about 2 ms of CPU, several times the exec itself, on
// a core the old generation is busy with. This constructor does what RunShim
// does before any of that runs: the C library calls it, with the process's
// arguments, before it starts the Go runtime.
//
// It handles only the plain case, exactly as RunShim would. Anything else it
// leaves alone and returns, so that the Go runtime starts and RunShim, the
// reference, does the work or reports the error: shim mode without a worker,
// a SUPERVISOR_EXEC_FD that is not a plain fd number, a failed exec. A
// failed exec changes nothing RunShim reads (the Go runtime takes the
// environment from the process's start, not from the C library), so
// RunShim's own attempt and its message are as if this had not run.
//
// glibc passes a constructor argc, argv and envp; other C libraries do not,
// so elsewhere this compiles to nothing and RunShim does it all.

/*
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef __GLIBC__
#define SUPERVISOR_FAST_SHIM 1

// shim_fd parses a SUPERVISOR_EXEC_FD value: decimal digits only, above 2
// (stdio). -1 for anything else, which RunShim then judges.
static int shim_fd(const char *s) {
	long fd = 0;
	if (*s == '\0') return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9') return -1;
		fd = fd * 10 + (*s - '0');
		if (fd > INT_MAX) return -1;
	}
	return fd > 2 ? (int)fd : -1;
}

__attribute__((constructor)) static void supervisor_exec_shim(int argc, char **argv, char **envp) {
	(void)envp;
	if (argc < 3 || strcmp(argv[1], "__supervisor-exec-worker") != 0) return;
	char pid[24], self[48];
	snprintf(pid, sizeof pid, "%d", (int)getpid());
	const char *path = argv[2], *v;
	if ((v = getenv("SUPERVISOR_EXEC_FD")) != NULL) {
		int fd = shim_fd(v);
		if (fd < 0) return;
		snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
		path = self;
		if (unsetenv("SUPERVISOR_EXEC_FD") != 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) return;
	}
	if ((v = getenv("LISTEN_FDS")) != NULL && *v != '\0' && setenv("LISTEN_PID", pid, 1) != 0) return;
	if ((v = getenv("WATCHDOG_USEC")) != NULL && *v != '\0' && setenv("WATCHDOG_PID", pid, 1) != 0) return;
	execv(path, argv + 2);
}
#else
#define SUPERVISOR_FAST_SHIM 0
#endif
*/
import "C"

// fastShim says whether this build has the fast path.
const fastShim = C.SUPERVISOR_FAST_SHIM == 1
