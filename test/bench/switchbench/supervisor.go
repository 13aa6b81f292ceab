package main

import (
	"fmt"
	"syscall"
	"time"
)

// supervisor is a running supervisor with pathfind as its worker.
type supervisor struct {
	*proc
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
	s := &supervisor{proc: p}
	e, _, err := p.find(0, bound, `"listening" line for http`, func(e entry) bool {
		return e.is("listening") && e.str("name") == "http"
	})
	if err == nil {
		s.addr = e.str("addr")
		e, _, err = p.find(0, bound, "generation 1 ready", func(e entry) bool {
			return e.is("generation ready") && e.int("gen") == 1
		})
	}
	if err != nil {
		if stopErr := p.stop(bound); stopErr != nil {
			warnf("%v", stopErr)
		}
		return nil, err
	}
	s.gen, s.pids = 1, e.ints("pids")
	return s, nil
}

// upgrade is the outcome of one SIGHUP.
type upgrade struct {
	hup      time.Time // when SIGHUP was sent
	ok       bool
	gen      int
	oldGen   int
	pids     []int
	oldPids  []int
	reason   string  // why it failed
	readyMS  float64 // the supervisor's start-to-ready time
	logIndex int     // of the outcome
}

// hup sends SIGHUP and waits for the upgrade it starts and for its outcome.
func (s *supervisor) hup(bound time.Duration) (upgrade, error) {
	mark := s.logs.len()
	u := upgrade{hup: time.Now()}
	if err := s.signal(syscall.SIGHUP); err != nil {
		return u, err
	}
	st, i, err := s.find(mark, bound, "upgrade started", func(e entry) bool {
		return e.is("upgrade started") && e.int("gen") > s.gen
	})
	if err != nil {
		return u, err
	}
	u.gen = st.int("gen")
	e, i, err := s.find(i, bound, fmt.Sprintf("outcome of the upgrade to generation %d", u.gen), func(e entry) bool {
		return (e.is("upgrade succeeded") || e.is("upgrade failed")) && e.int("gen") == u.gen
	})
	if err != nil {
		return u, err
	}
	u.ok, u.logIndex = e.msg() == "upgrade succeeded", i
	u.oldGen, u.pids, u.oldPids, u.reason = e.int("old_gen"), e.ints("pids"), e.ints("old_pids"), e.str("reason")
	u.readyMS, _ = e.num("ready_ms")
	if u.ok {
		s.gen, s.pids = u.gen, u.pids
	}
	return u, nil
}

// waitDrained waits for the generation that u replaced to have drained.
func (s *supervisor) waitDrained(u upgrade, bound time.Duration) error {
	if !u.ok || u.oldGen == 0 {
		return nil
	}
	_, _, err := s.find(u.logIndex, bound, fmt.Sprintf("generation %d drained", u.oldGen), func(e entry) bool {
		return e.is("generation drained") && e.int("gen") == u.oldGen
	})
	return err
}
