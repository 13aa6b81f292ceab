// Command supervisor owns a service's listening sockets and runs the service
// in worker processes, which it upgrades on SIGHUP without dropping a
// connection, and upgrades itself on SIGUSR2; `supervisor ctl` talks to it
// over its control socket. See the README for the flags and the worker contract.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/procswitch/supervisor/internal/earlysig"
	"github.com/procswitch/supervisor/internal/proc"
)

// The main goroutine stays on the main thread, where every worker is
// forked and the re-exec in place runs; the supervisor itself runs on
// other threads (proc.RunOnMainThread says why).
//
// The supervisor runs its Go code on one CPU at a time (GOMAXPROCS 1,
// unless the environment sets GOMAXPROCS): its work is one loop of
// events, and with a second processor each event handed from a reader to
// the loop woke an idle thread to look for work, which found none; that
// doubled the supervisor's CPU time per message of a worker (a connection
// stored at each accept) on the CPUs the workers need. The workers get
// the environment as it is.
func init() {
	runtime.LockOSThread()
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == proc.ShimArg {
		earlysig.Release() // the worker's signals are its own (an exec resets caught ones anyway)
		os.Exit(proc.RunShim(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "ctl" {
		earlysig.Release()
		os.Exit(runCtl(os.Args[2:], os.Stdout, os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == reexecCheckArg {
		os.Exit(runReexecCheck(os.Args[2:]))
	}
	// Caught from the start (package earlysig): a signal before serve is
	// ready for it must not take its default action, which would end the
	// process, and after a re-exec in place its workers with it.
	os.Exit(proc.RunOnMainThread(func() int { return run(os.Args[1:], earlysig.C) }))
}

// selfPath is the binary this supervisor was started from, made absolute
// at start: a self-upgrade runs what is installed there then.
var selfPath = func() string {
	p := os.Args[0]
	if !strings.Contains(p, "/") {
		if lp, err := exec.LookPath(p); err == nil {
			p = lp
		}
	}
	if abs, err := filepath.Abs(p); err == nil {
		p = abs
	}
	return p
}()

func run(args []string, signals chan os.Signal) int {
	opts, err := parseFlags(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "supervisor: %v\n", err)
		return 2
	}
	log, err := newLogger(opts.logFormat, opts.logLevel, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "supervisor: %v\n", err)
		return 2
	}
	if err := serve(opts, log, signals); err != nil {
		fmt.Fprintf(os.Stderr, "supervisor: %v\n", err)
		return 1
	}
	return 0
}
