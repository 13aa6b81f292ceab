package contract

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Errors of ParseDrainSignal.
var (
	ErrUnknownSignal     = errors.New("unknown signal")
	ErrUncatchableSignal = errors.New("cannot be caught") // SIGKILL, SIGSTOP
)

// ParseDrainSignal parses a drain signal as SUPERVISOR_DRAIN_SIGNAL and the
// supervisor's --drain-signal give it: a name, with or without the SIG
// prefix, in any case ("SIGUSR1", "usr1"), or a number ("10"). A signal
// that a worker cannot catch, and so could not drain on (SIGKILL, SIGSTOP),
// is refused with ErrUncatchableSignal; anything else it does not know with
// ErrUnknownSignal. The errors name the signal, without a package prefix.
func ParseDrainSignal(s string) (syscall.Signal, error) {
	var sig syscall.Signal
	if n, err := strconv.Atoi(s); err == nil {
		sig = syscall.Signal(n)
		if n <= 0 || unix.SignalName(sig) == "" {
			return 0, fmt.Errorf("%w %q", ErrUnknownSignal, s)
		}
	} else {
		name := strings.ToUpper(s)
		if !strings.HasPrefix(name, "SIG") {
			name = "SIG" + name
		}
		if sig = unix.SignalNum(name); sig == 0 {
			return 0, fmt.Errorf("%w %q", ErrUnknownSignal, s)
		}
	}
	if sig == syscall.SIGKILL || sig == syscall.SIGSTOP {
		return 0, fmt.Errorf("%s %w", unix.SignalName(sig), ErrUncatchableSignal)
	}
	return sig, nil
}
