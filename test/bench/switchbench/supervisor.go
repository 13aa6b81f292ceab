package main

import (
	"os/exec"
	"syscall"
	"time"

	"github.com/procswitch/supervisor/test/procwatch"
)

// startProc starts path in a process group of its own, so that a ^C at the
// terminal reaches only the benchmark, which then stops it in order; it is
// killed if the benchmark dies first.
func startProc(name, path string, args ...string) (*procwatch.Proc, error) {
	cmd := exec.Command(path, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return procwatch.Start(name, cmd)
}

// supervisor is a running supervisor with pathfind as its worker.
type supervisor struct {
	*procwatch.Supervisor
	addr string // the bound address of the socket named http
	gen  int    // the current generation
	pids []int  // its workers
}

// startSupervisor starts the supervisor as an operator would, and waits for
// its socket and its first generation.
func startSupervisor(bins binaries, drainTimeout, bound time.Duration) (*supervisor, error) {
	p, err := startProc("supervisor", bins.supervisor,
		"--listen", "http=tcp://127.0.0.1:0", "--log-format", "json",
		"--drain-timeout", drainTimeout.String(), "--", bins.pathfind)
	if err != nil {
		return nil, err
	}
	s := &supervisor{Supervisor: &procwatch.Supervisor{Proc: p}, gen: 1}
	s.addr, err = s.WaitListening("http", bound)
	if err == nil {
		s.pids, err = s.WaitReady(1, bound)
	}
	if err != nil {
		if stopErr := p.Stop(bound); stopErr != nil {
			warnf("%v", stopErr)
		}
		return nil, err
	}
	return s, nil
}

// hup sends SIGHUP and waits for the upgrade it starts and for its outcome.
func (s *supervisor) hup(bound time.Duration) (procwatch.Upgrade, error) {
	u, err := s.HUP(bound)
	if err == nil && u.OK {
		s.gen, s.pids = u.Gen, u.PIDs
	}
	return u, err
}

// waitDrained waits for the generation that u replaced to have drained.
func (s *supervisor) waitDrained(u procwatch.Upgrade, bound time.Duration) error {
	if !u.OK || u.OldGen == 0 {
		return nil
	}
	_, err := s.WaitDrained(u.End, u.OldGen, bound)
	return err
}
