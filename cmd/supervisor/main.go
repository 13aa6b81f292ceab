// Command supervisor owns a service's listening sockets and runs the service
// in worker processes, which it upgrades on SIGHUP without dropping a
// connection. See the README for the flags and the worker contract.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/procswitch/supervisor/internal/proc"
	"github.com/procswitch/supervisor/internal/supervisor"
	"github.com/procswitch/supervisor/listener"
	"github.com/rs/zerolog"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == proc.ShimArg {
		os.Exit(proc.RunShim(os.Args[2:]))
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

// serve opens the sockets, runs the workers and handles signals until a
// stop signal has drained them all.
func serve(opts *options, log zerolog.Logger) error {
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(signals)

	sockets, err := listener.Open(opts.listen)
	if err != nil {
		return err
	}
	defer sockets.Close()
	for _, s := range sockets.Sockets {
		log.Info().Str("name", s.Name).Str("network", s.Network).Str("addr", s.Addr.String()).
			Bool("inherited", s.Inherited).Msg("listening")
	}
	runtimeDir, cleanup, err := makeRuntimeDir(opts.runtimeDir)
	if err != nil {
		return err
	}
	defer cleanup()

	sup, err := supervisor.New(supervisor.Config{
		Path:         opts.command[0],
		Args:         opts.command[1:],
		Workers:      opts.workers,
		Ready:        opts.ready,
		ReadyTimeout: opts.readyTimeout,
		DrainSignal:  opts.drainSignal,
		DrainTimeout: opts.drainTimeout,
		Watchdog:     opts.watchdog,
		RestartMin:   opts.restartMin,
		RestartMax:   opts.restartMax,
		Handover:     opts.mode == "handover",
		SnapshotPath: opts.snapshot,
		Sockets:      sockets,
		RuntimeDir:   runtimeDir,
		Shim:         "/proc/self/exe",
		Log:          log,
	})
	if err != nil {
		return err
	}
	log.Info().Int("pid", os.Getpid()).Str("worker", opts.command[0]).Int("workers", opts.workers).
		Str("ready", opts.ready.String()).Str("mode", opts.mode).Msg("supervisor started")
	go func() {
		for sig := range signals {
			switch sig {
			case syscall.SIGHUP:
				log.Info().Msg("SIGHUP: upgrading")
				sup.Upgrade()
			default:
				log.Info().Str("signal", sig.String()).Msg("stop requested")
				sup.Stop()
			}
		}
	}()
	if err := sup.Run(); err != nil {
		return err
	}
	log.Info().Msg("stopped")
	return nil
}

// makeRuntimeDir returns the directory for notify sockets: the one given,
// systemd's RuntimeDirectory=, or a private temporary one removed at exit.
func makeRuntimeDir(dir string) (string, func(), error) {
	if dir == "" {
		// systemd joins several RuntimeDirectory= entries with ':'.
		dir, _, _ = strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":")
	}
	if dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", nil, fmt.Errorf("runtime directory: %w", err)
		}
		return dir, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "supervisor-")
	if err != nil {
		return "", nil, fmt.Errorf("runtime directory: %w (set --runtime-dir)", err)
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}
