package main

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// backgroundNice is the niceness of background work inside the game (a
// reload's compile, the snapshot a --live worker writes after it handed
// over): the kernel then runs the threads that answer players first on a
// busy machine.
const backgroundNice = 10

// niced runs fn on a thread of its own at backgroundNice, and waits for
// it. The thread is not given back to the Go runtime afterwards (raising a
// thread's priority again needs a privilege), so it ends with fn.
func niced(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), backgroundNice)
		fn()
	}()
	<-done
}
