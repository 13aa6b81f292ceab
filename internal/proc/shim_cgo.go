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
// a SUPERVISOR_EXEC_FD that is not a plain fd number, a failed exec. In
// particular it never runs the worker's path when it was given a held file:
// if that exec fails, RunShim tries the held file again and reports.
//
// It must therefore change nothing RunShim reads. The Go runtime takes the
// environment from the array the kernel laid out at the process's start, and
// glibc's unsetenv and setenv edit that very array in place; so this builds
// the worker's environment in an array of its own and execs with execve,
// never touching the process's. The only changes it makes are to the held
// fd's close-on-exec flag and to the reload signal's disposition (ignored),
// which RunShim sets the same way.
//
// glibc passes a constructor argc, argv and envp; other C libraries do not,
// so elsewhere this compiles to nothing and RunShim does it all.

/*
#include <fcntl.h>
#include <signal.h>
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

// shim_held readies the held file at fd as RunShim's heldPath does:
// close-on-exec for a binary, open across the exec for a "#!" script, whose
// interpreter opens /proc/self/fd/N after it. -1 on failure.
static int shim_held(int fd) {
	char magic[2];
	ssize_t n = pread(fd, magic, sizeof magic, 0);
	if (n < 0) return -1;
	int script = n == 2 && magic[0] == '#' && magic[1] == '!';
	return fcntl(fd, F_SETFD, script ? 0 : FD_CLOEXEC);
}

// shim_has says whether env entry kv is the variable name (NAME=...).
static int shim_has(const char *kv, const char *name) {
	size_t n = strlen(name);
	return strncmp(kv, name, n) == 0 && kv[n] == '=';
}

// shim_getenv is getenv on envp: the first value of name, or NULL.
static const char *shim_getenv(char **envp, const char *name) {
	for (; *envp; envp++)
		if (shim_has(*envp, name)) return *envp + strlen(name) + 1;
	return NULL;
}

// shim_signals are the reload signals the fast path knows by name, as the
// supervisor writes them; another leaves the work to RunShim.
static const struct { const char *name; int sig; } shim_signals[] = {
	{"SIGHUP", SIGHUP}, {"SIGINT", SIGINT}, {"SIGQUIT", SIGQUIT}, {"SIGUSR1", SIGUSR1},
	{"SIGUSR2", SIGUSR2}, {"SIGTERM", SIGTERM}, {"SIGWINCH", SIGWINCH}, {"SIGPWR", SIGPWR},
};

// shim_reload_signal is the reload signal to ignore across the exec, as
// RunShim's ignoreReloadSignal: 0 for none, -1 for a name it does not know.
static int shim_reload_signal(char **envp) {
	const char *v = shim_getenv(envp, "SUPERVISOR_RELOAD_SIGNAL");
	if (v == NULL || *v == '\0') return 0;
	for (size_t i = 0; i < sizeof shim_signals / sizeof shim_signals[0]; i++)
		if (strcmp(v, shim_signals[i].name) == 0) return shim_signals[i].sig;
	return -1;
}

__attribute__((constructor)) static void supervisor_exec_shim(int argc, char **argv, char **envp) {
	if (argc < 3 || strcmp(argv[1], "__supervisor-exec-worker") != 0) return;
	int reload = shim_reload_signal(envp);
	if (reload < 0) return;
	if (reload > 0 && signal(reload, SIG_IGN) == SIG_ERR) return;
	const char *path = argv[2], *v;
	char self[48], listen[40], watchdog[40];
	if ((v = shim_getenv(envp, "SUPERVISOR_EXEC_FD")) != NULL && *v != '\0') {
		int fd = shim_fd(v);
		if (fd < 0 || shim_held(fd) != 0) return;
		snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
		path = self;
	}
	// The worker's environment: ours without SUPERVISOR_EXEC_FD, with
	// LISTEN_PID and WATCHDOG_PID set to our PID when there is something
	// to claim (as RunShim, a set but empty variable counts as not set).
	int pid = (int)getpid(), n = 0;
	int claim_listen = (v = shim_getenv(envp, "LISTEN_FDS")) != NULL && *v != '\0';
	int claim_watchdog = (v = shim_getenv(envp, "WATCHDOG_USEC")) != NULL && *v != '\0';
	while (envp[n] != NULL) n++;
	char **env = malloc((n + 3) * sizeof *env), **e = env;
	if (env == NULL) return;
	for (char **kv = envp; *kv; kv++) {
		if (shim_has(*kv, "SUPERVISOR_EXEC_FD") || (claim_listen && shim_has(*kv, "LISTEN_PID")) ||
		    (claim_watchdog && shim_has(*kv, "WATCHDOG_PID")))
			continue;
		*e++ = *kv;
	}
	if (claim_listen) {
		snprintf(listen, sizeof listen, "LISTEN_PID=%d", pid);
		*e++ = listen;
	}
	if (claim_watchdog) {
		snprintf(watchdog, sizeof watchdog, "WATCHDOG_PID=%d", pid);
		*e++ = watchdog;
	}
	*e = NULL;
	execve(path, argv + 2, env);
	free(env);
}
#else
#define SUPERVISOR_FAST_SHIM 0
#endif
*/
import "C"

// fastShim says whether this build has the fast path.
const fastShim = C.SUPERVISOR_FAST_SHIM == 1
