package supervisor

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// executable is a generation's worker file, a binary or a "#!" script, held
// open so that the same code can be started again (a crash restart, a
// rollback) even after a new build has been installed at the same path. The
// exec shim runs it from the held fd then (proc.EnvExecFD), and never the
// new build in its place.
type executable struct {
	fd  int
	st  unix.Stat_t
	own bool
}

func openExecutable(path string) (*executable, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("worker %s: %w", path, err)
	}
	e := &executable{fd: fd, own: true}
	if err := unix.Fstat(fd, &e.st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("worker %s: %w", path, err)
	}
	return e, nil
}

// executableFromFD is a held binary passed on by a re-exec (reexec.go).
func executableFromFD(fd int) (*executable, error) {
	e := &executable{fd: fd, own: true}
	if err := unix.Fstat(fd, &e.st); err != nil {
		return nil, fmt.Errorf("re-exec: held binary fd %d: %w", fd, err)
	}
	unix.CloseOnExec(fd)
	return e, nil
}

// at reports whether path still names this very file, unchanged: then it
// is executed by path, so that the worker's argv[0], /proc/PID/exe and a
// script's $0 are the path; else through the held fd.
func (e *executable) at(path string) bool {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return false
	}
	return st.Dev == e.st.Dev && st.Ino == e.st.Ino && st.Size == e.st.Size && st.Mtim == e.st.Mtim
}

// same reports whether e and o are one file, unchanged since each was
// opened (a new build installed by rename is a new file, even with the same
// bytes).
func (e *executable) same(o *executable) bool {
	return e == o || e.st.Dev == o.st.Dev && e.st.Ino == o.st.Ino && e.st.Size == o.st.Size && e.st.Mtim == o.st.Mtim
}

func (e *executable) close() {
	if e != nil && e.own {
		e.own = false
		unix.Close(e.fd)
	}
}
