package proc

import (
	"errors"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// PR_SET_PDEATHSIG is tied to the thread that forked the child, not to the
// process: when that thread ends, the child gets the signal (SIGKILL here)
// even though the process lives on. execve(2) ends every thread but the
// one that calls it. So a supervisor that re-executes itself in place
// (Exec) must fork every worker, and exec, on one thread: the main thread,
// which the kernel keeps through an exec (the caller takes the leader's
// place) and which Go never ends.
//
// RunOnMainThread serves that: package main locks its main goroutine to
// the main thread (runtime.LockOSThread in an init function) and runs the
// supervisor on it, its loop included, which starts every worker and asks
// for the exec; from then on Start and Exec check that they run there.
// Without it (tests, other binaries), forks run on whatever thread the
// caller is on, as before, and Exec refuses.

var onMainThread atomic.Bool

// RunOnMainThread runs program on the calling goroutine, which must be
// locked to the main thread, and makes Start and Exec require that thread.
func RunOnMainThread(program func() int) int {
	onMainThread.Store(true)
	return program()
}

// ErrNoMainThread is Exec's error when RunOnMainThread does not run, or
// Start's and Exec's off the main thread.
var ErrNoMainThread = errors.New("proc: the supervisor forks its workers and re-executes itself only from the main thread (RunOnMainThread): from any other, the exec would kill the workers")

// checkThread says whether a fork may run here.
func checkThread() error {
	if onMainThread.Load() && unix.Gettid() != unix.Getpid() {
		return ErrNoMainThread
	}
	return nil
}

// Exec replaces the process's image (execve(2)) with path, on the main
// thread, with reaping held (Freeze's release is the caller's, should the
// exec fail): the workers stay children of this process, exited ones stay
// zombies for the new image to reap. It returns only on failure.
func Exec(path string, argv, env []string) error {
	return ExecPrepared(func() error { return nil }, func() {}, path, argv, env)
}

// ExecPrepared is Exec with prepare run first (an error from it is
// returned, and no exec tried) and undo after an exec that failed, or a
// prepare that did.
func ExecPrepared(prepare func() error, undo func(), path string, argv, env []string) (err error) {
	if !onMainThread.Load() {
		return ErrNoMainThread
	}
	if err := checkThread(); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			undo()
		}
	}()
	if err = prepare(); err == nil {
		err = syscall.Exec(path, argv, env)
	}
	return err
}
