package contract

import (
	"fmt"
	"strconv"
	"strings"
)

// Strictness says how ParseListenFDs reads values that sd_listen_fds(3)
// would refuse.
type Strictness int

const (
	// Strict is sd_listen_fds_with_names(3)'s reading, for a worker, whose
	// variables come from its supervisor: a LISTEN_PID or LISTEN_FDS that is
	// not a number is an error, and so is a LISTEN_FDNAMES without exactly
	// one name per fd. Names are kept as given, even empty ones.
	Strict Strictness = iota
	// Lenient is for the supervisor itself, which may find variables that
	// a service manager or an ancestor left behind: a LISTEN_PID that is not
	// a number is another process's, an empty LISTEN_FDS passes nothing, and
	// LISTEN_FDNAMES names what it can (an fd it does not name, or names
	// with "", is DefaultListenFDName; names beyond LISTEN_FDS are ignored).
	// A LISTEN_FDS that is not a count is still an error.
	Lenient
)

// ListenFDs is what LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES say a process
// was passed: Count fds from ListenFDsStart on, each with a name.
type ListenFDs struct {
	Count int // 0 when no fds are meant for the process
	names []string
	s     Strictness
}

// Name returns the name of the i-th fd (fd ListenFDsStart+i):
// DefaultListenFDName when LISTEN_FDNAMES does not name it.
func (l ListenFDs) Name(i int) string {
	if i >= len(l.names) || l.names[i] == "" && l.s == Lenient {
		return DefaultListenFDName
	}
	return l.names[i]
}

// ParseListenFDs reads LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES through
// lookup (os.LookupEnv) for the process pid, as sd_listen_fds_with_names(3)
// does. The fds are meant for pid only when LISTEN_PID is pid: otherwise,
// or when LISTEN_PID or LISTEN_FDS is unset, the result has Count 0 and no
// error (the variables were meant for an ancestor and leaked through). s
// says what else is an error. The caller checks the fds themselves and
// unsets the variables.
//
// Errors name the variable and its value, without a package prefix: the
// caller adds its own.
func ParseListenFDs(lookup func(string) (string, bool), pid int, s Strictness) (ListenFDs, error) {
	none := ListenFDs{s: s}
	pidStr, ok := lookup(EnvListenPID)
	if !ok {
		return none, nil
	}
	if p, err := strconv.Atoi(pidStr); err != nil || p <= 0 {
		if s == Lenient {
			return none, nil
		}
		return none, fmt.Errorf("%s=%q: not a process id", EnvListenPID, pidStr)
	} else if p != pid {
		return none, nil
	}
	countStr, ok := lookup(EnvListenFDs)
	if !ok || countStr == "" && s == Lenient {
		return none, nil
	}
	n, err := strconv.Atoi(countStr)
	if err != nil || n < 0 {
		return none, fmt.Errorf("%s=%q: not a count of fds", EnvListenFDs, countStr)
	}
	if n == 0 {
		return none, nil
	}
	l := ListenFDs{Count: n, s: s}
	if v, ok := lookup(EnvListenFDNames); ok && (v != "" || s == Strict) {
		l.names = strings.Split(v, ":")
		if s == Strict && len(l.names) != n {
			return none, fmt.Errorf("%s has %d names for %s=%d", EnvListenFDNames, len(l.names), EnvListenFDs, n)
		}
	}
	return l, nil
}
