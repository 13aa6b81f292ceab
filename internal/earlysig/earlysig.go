// Package earlysig catches the supervisor's signals from the process's
// first initialisations on: imported by package main, its init runs before
// those of the heavier packages (Go initialises ready packages in import
// path order, and this one sorts before github.com/prometheus and
// github.com/rs). A SIGTERM or SIGHUP that comes while the process starts,
// as after a re-exec in place, waits in C instead of taking Go's default
// action, which would end the process and its workers with it
// (PR_SET_PDEATHSIG).
package earlysig

import (
	"os"
	"os/signal"
	"syscall"
)

// C receives SIGHUP, SIGTERM, SIGINT and SIGUSR2 from the start.
var C = make(chan os.Signal, 16)

func init() { signal.Notify(C, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR2) }

// Release gives the signals back to their default handling, for a mode of
// the binary that is no supervisor (ctl, where Ctrl-C must interrupt).
func Release() { signal.Reset(syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR2) }
