package proc

import (
	"syscall"
)

// PR_SET_PDEATHSIG is tied to the thread that forked the child, not to the
// process: when that thread ends, the child gets the signal (SIGKILL here)
// even though the process lives on. execve(2) ends every thread but the
// one that calls it. So a supervisor that re-executes itself in place
// (Exec) must fork every worker, and exec, on one thread: the main thread,
// which the kernel keeps through an exec (the caller takes the leader's
// place) and which Go never ends.
//
// ServeMainThread serves that: package main locks its main goroutine to
// the main thread (runtime.LockOSThread in an init function) and calls
// ServeMainThread, which runs the program on another goroutine and forks
// and execs on the main thread for it. Without it (tests, other binaries),
// forks run on whatever thread the caller is on, as before; Exec then
// refuses.

var mainThread chan func()

// ServeMainThread runs program on a new goroutine, and on the calling one,
// which must be locked to the main thread, the forks and the exec asked
// for meanwhile, until program returns; it returns program's result.
func ServeMainThread(program func() int) int {
	calls := make(chan func())
	mainThread = calls // before the program's goroutine starts: it reads it
	done := make(chan int, 1)
	go func() { done <- program() }()
	for {
		select {
		case f := <-calls:
			f()
		case code := <-done:
			return code
		}
	}
}

// onMainThread runs f on the main thread when ServeMainThread serves,
// else here.
func onMainThread(f func()) {
	if mainThread == nil {
		f()
		return
	}
	done := make(chan struct{})
	mainThread <- func() {
		defer close(done)
		f()
	}
	<-done
}

// ErrNoMainThread is Exec's error when ServeMainThread does not serve.
var ErrNoMainThread = errMainThread{}

type errMainThread struct{}

func (errMainThread) Error() string {
	return "proc: the supervisor re-executes itself only from the main thread (ServeMainThread), where it forks its workers: from any other thread the exec would kill them"
}

// Exec replaces the process's image (execve(2)) with path, on the main
// thread, with reaping held (Freeze's release is the caller's, should the
// exec fail): the workers stay children of this process, exited ones stay
// zombies for the new image to reap. It returns only on failure.
func Exec(path string, argv, env []string) error {
	return ExecPrepared(func() error { return nil }, func() {}, path, argv, env)
}

// ExecPrepared is Exec with prepare run first on the main thread (an error
// from it is returned, and no exec tried) and undo after an exec that
// failed, or a prepare that did.
func ExecPrepared(prepare func() error, undo func(), path string, argv, env []string) error {
	if mainThread == nil {
		return ErrNoMainThread
	}
	var err error
	onMainThread(func() {
		defer func() {
			if err != nil {
				undo()
			}
		}()
		if err = prepare(); err == nil {
			err = syscall.Exec(path, argv, env)
		}
	})
	return err
}
