package main

import (
	"os"
	"runtime"
	"strconv"

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

// exitingNice is the niceness of a worker that handed over and only
// finishes (the snapshot, then its exit, whose freeing of a large heap is
// kernel work done at the exiting thread's priority).
const exitingNice = 19

// niceAll sets every thread of the process to nice, for good: for a
// worker that will not serve again.
func niceAll(nice int) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return
	}
	for _, t := range tasks {
		if tid, err := strconv.Atoi(t.Name()); err == nil {
			unix.Setpriority(unix.PRIO_PROCESS, tid, nice)
		}
	}
}
