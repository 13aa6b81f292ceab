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

	"github.com/procswitch/supervisor/internal/proc"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == proc.ShimArg {
		os.Exit(proc.RunShim(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "ctl" {
		os.Exit(runCtl(os.Args[2:], os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
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
	if err := serve(opts, log); err != nil {
		fmt.Fprintf(os.Stderr, "supervisor: %v\n", err)
		return 1
	}
	return 0
}
