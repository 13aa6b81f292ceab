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
// the main thread (runtime.LockOSThread in an init function) and calls it;
// the program runs on a goroutine of its own, on Go's other threads, and
// the main goroutine does nothing but the forks (Start) and the exec
// (Exec) the program asks of it. The program's loop is not run on the
// main thread itself: every wake-up of a goroutine locked to a thread is
// a hand-off between two threads (the runtime wakes the locked thread and
// parks the one that found the goroutine runnable), which made each
// message of a worker (a connection stored, say) cost about a hundred
// microseconds of two CPUs' time. Without RunOnMainThread (tests, other
// binaries), forks run on whatever thread the caller is on, and Exec
// refuses.

var (
	onMainThread atomic.Bool
	mainJobs     = make(chan func()) // served by RunOnMainThread's caller
)

// RunOnMainThread runs program on a goroutine of its own while the calling
// goroutine, which must be locked to the main thread, runs the forks and
// the exec program asks for; it returns program's result.
func RunOnMainThread(program func() int) int {
	onMainThread.Store(true)
	done := make(chan int, 1)
	go func() { done <- program() }()
	for {
		select {
		case job := <-mainJobs:
			job()
		case code := <-done:
			return code
		}
	}
}

// ErrNoMainThread is Exec's error when RunOnMainThread does not run.
var ErrNoMainThread = errors.New("proc: the supervisor re-executes itself only from the main thread (RunOnMainThread): from any other, the exec would kill the workers")

// onMain runs f on the main thread when RunOnMainThread runs, and waits
// for it; else on the caller's thread.
func onMain(f func()) {
	if !onMainThread.Load() || unix.Gettid() == unix.Getpid() {
		f()
		return
	}
	ran := make(chan struct{})
	mainJobs <- func() {
		defer close(ran)
		f()
	}
	<-ran
}

// Exec replaces the process's image (execve(2)) with path, on the main
// thread, with reaping held (Freeze's release is the caller's, should the
// exec fail): the workers stay children of this process, exited ones stay
// zombies for the new image to reap. It returns only on failure.
func Exec(path string, argv, env []string) error {
	return ExecPrepared(func() error { return nil }, func() {}, path, argv, env)
}

// ExecPrepared is Exec with prepare run first, on the main thread too (an
// error from it is returned, and no exec tried), and undo after an exec
// that failed, or a prepare that did.
func ExecPrepared(prepare func() error, undo func(), path string, argv, env []string) (err error) {
	if !onMainThread.Load() {
		return ErrNoMainThread
	}
	onMain(func() {
		if err = prepare(); err == nil {
			err = syscall.Exec(path, argv, env)
		}
		if err != nil {
			undo()
		}
	})
	return err
}
