package handoff

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/procswitch/supervisor/internal/contract"
	"golang.org/x/sys/unix"
)

// ErrNoSocket means no passed socket has the requested name.
var ErrNoSocket = errors.New("no passed socket with that name")

// Worker is a worker process's side of the contract: the sockets it was
// given, its notify socket, its watchdog and its drain signal. Create it once,
// early in main, with New.
type Worker struct {
	mu    sync.Mutex
	socks []*socket // passed fds, in fd order

	notifyAddr string
	storeFD    int // storeConns' socket for its many datagrams; 0 until used
	watchdog   time.Duration
	generation int
	handedOver bool // awaitHandover got GO

	drain     *drainWatch
	reload    *reloadWatch // nil: no reload signal (SUPERVISOR_RELOAD_SIGNAL unset)
	closeOnce sync.Once
}

// socket is one passed fd. held is false once the fd has been taken, as a
// listener, a packet conn, a connection or a file.
type socket struct {
	name string
	fd   int
	held bool
	kind string // what it was taken as; "" while unclaimed
	ln   any    // the net.Listener or net.PacketConn it became
}

// New reads the worker's environment, takes the passed fds (only when
// LISTEN_PID is this process's PID, as sd_listen_fds(3) does; close-on-exec)
// and starts watching for the drain signal. A malformed variable is an
// error, as is a LISTEN_FDNAMES without one name per fd or an fd that is not
// open. New always unsets LISTEN_*, NOTIFY_SOCKET and WATCHDOG_*, even when
// it fails, so that the worker's children do not believe they were meant; a
// second call therefore finds nothing.
func New() (*Worker, error) {
	return newWorker(contract.ListenFDsStart)
}

// newWorker is New with the first fd as a parameter, so that in-process
// tests can place sockets at fds the test runtime does not use.
func newWorker(fdStart int) (*Worker, error) {
	defer unsetEnv()
	w := &Worker{}
	var err error
	if w.notifyAddr, err = notifyAddrFromEnv(); err != nil {
		return nil, err
	}
	if w.watchdog, err = watchdogFromEnv(); err != nil {
		return nil, err
	}
	if w.generation, err = generationFromEnv(); err != nil {
		return nil, err
	}
	sig, err := drainSignalFromEnv()
	if err != nil {
		return nil, err
	}
	reloadSig, err := reloadSignalFromEnv()
	if err != nil {
		return nil, err
	}
	if w.socks, err = socketsFromEnv(fdStart); err != nil {
		return nil, err
	}
	w.drain = watchDrain(sig)
	if reloadSig != 0 && reloadSig != sig {
		w.reload = watchReload(w, reloadSig)
	}
	return w, nil
}

func unsetEnv() {
	for _, k := range []string{contract.EnvListenFDs, contract.EnvListenFDNames, contract.EnvListenPID,
		contract.EnvNotifySocket, contract.EnvWatchdogUSec, contract.EnvWatchdogPID} {
		os.Unsetenv(k)
	}
}

// socketsFromEnv reads LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES strictly,
// as sd_listen_fds_with_names(3) does, and takes the fds they describe.
func socketsFromEnv(fdStart int) ([]*socket, error) {
	passed, err := contract.ParseListenFDs(os.LookupEnv, os.Getpid(), contract.Strict)
	if err != nil {
		return nil, fmt.Errorf("handoff: %w", err)
	}
	n := passed.Count
	// Check every fd before taking any.
	for fd := fdStart; fd < fdStart+n; fd++ {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
			return nil, fmt.Errorf("handoff: %s=%d but fd %d is not usable: %w", contract.EnvListenFDs, n, fd, err)
		}
	}
	socks := make([]*socket, n)
	for i := range socks {
		socks[i] = &socket{name: passed.Name(i), fd: fdStart + i, held: true}
	}
	return socks, nil
}

func notifyAddrFromEnv() (string, error) {
	addr := os.Getenv(contract.EnvNotifySocket)
	if addr == "" || addr[0] == '/' || addr[0] == '@' {
		return addr, nil
	}
	return "", fmt.Errorf("handoff: %s=%q: want an absolute path or an @abstract name", contract.EnvNotifySocket, addr)
}

// watchdogFromEnv returns the watchdog interval meant for this process, as
// sd_watchdog_enabled(3): 0 when WATCHDOG_PID names another process.
func watchdogFromEnv() (time.Duration, error) {
	usecStr, ok := os.LookupEnv(contract.EnvWatchdogUSec)
	if !ok {
		return 0, nil
	}
	usec, err := strconv.ParseInt(usecStr, 10, 64)
	if err != nil || usec < 0 || usec > int64(time.Duration(1<<63-1)/time.Microsecond) {
		return 0, fmt.Errorf("handoff: %s=%q: not a count of microseconds", contract.EnvWatchdogUSec, usecStr)
	}
	if pidStr, ok := os.LookupEnv(contract.EnvWatchdogPID); ok {
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 {
			return 0, fmt.Errorf("handoff: %s=%q: not a process id", contract.EnvWatchdogPID, pidStr)
		}
		if pid != os.Getpid() {
			return 0, nil
		}
	}
	return time.Duration(usec) * time.Microsecond, nil
}

func generationFromEnv() (int, error) {
	s, ok := os.LookupEnv(contract.EnvGeneration)
	if !ok || s == "" {
		return 0, nil
	}
	g, err := strconv.Atoi(s)
	if err != nil || g < 0 {
		return 0, fmt.Errorf("handoff: %s=%q: not a generation number", contract.EnvGeneration, s)
	}
	return g, nil
}

// drainSignalFromEnv parses SUPERVISOR_DRAIN_SIGNAL
// (contract.ParseDrainSignal); SIGTERM when unset.
func drainSignalFromEnv() (syscall.Signal, error) {
	s := os.Getenv(contract.EnvDrainSignal)
	if s == "" {
		return syscall.SIGTERM, nil
	}
	sig, err := contract.ParseDrainSignal(s)
	if err != nil {
		return 0, fmt.Errorf("handoff: %s=%q: %w", contract.EnvDrainSignal, s, err)
	}
	return sig, nil
}

// Supervised reports whether the process runs under a supervisor that
// speaks the contract: sockets were passed to it, or it has a notify socket.
// A binary meant for the supervisor can say so when this is false.
func (w *Worker) Supervised() bool {
	return len(w.socks) > 0 || w.notifyAddr != ""
}

// Generation returns SUPERVISOR_GENERATION: 1 for the first worker
// generation, 0 when not set (not run by our supervisor).
func (w *Worker) Generation() int { return w.generation }

// Close stops watching for the drain signal (the signals get their default
// action back) and closes the passed fds that were never taken. Listeners,
// packet conns and files already returned belong to the caller.
func (w *Worker) Close() error {
	var errs []error
	w.closeOnce.Do(func() {
		if w.drain != nil {
			w.drain.stop()
		}
		if w.reload != nil {
			w.reload.stop()
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, s := range w.socks {
			if s.held {
				errs = append(errs, unix.Close(s.fd))
				s.held, s.kind = false, "closed"
			}
		}
		if w.storeFD > 0 {
			errs = append(errs, unix.Close(w.storeFD))
			w.storeFD = 0
		}
	})
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("handoff: close: %w", err)
	}
	return nil
}
