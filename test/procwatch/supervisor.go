package procwatch

import (
	"fmt"
	"syscall"
	"time"
)

// Supervisor is a supervisor started with --log-format json, followed
// through the lines it logs.
type Supervisor struct{ *Proc }

// WaitListening waits up to d for the socket named name to be listening and
// returns its address.
func (s *Supervisor) WaitListening(name string, d time.Duration) (string, error) {
	e, _, err := s.Find(0, d, fmt.Sprintf("%q listening", name), func(e Entry) bool {
		return e.Is("listening", "name", "addr") && e.Str("name") == name
	})
	return e.Str("addr"), err
}

// WaitReady waits up to d for generation gen to be ready and returns the
// PIDs of its workers.
func (s *Supervisor) WaitReady(gen int, d time.Duration) ([]int, error) {
	e, _, err := s.Find(0, d, fmt.Sprintf("generation %d ready", gen), func(e Entry) bool {
		return e.Is("generation ready", "gen", "pids") && e.Int("gen") == gen
	})
	return e.Ints("pids"), err
}

// Upgrade is the outcome of one upgrade, as the supervisor logged it.
type Upgrade struct {
	OK      bool
	Gen     int // the generation it started
	OldGen  int // the generation it replaced, or kept when it failed
	PIDs    []int
	OldPIDs []int
	Reason  string    // why it failed
	Kind    string    // of the failure: the supervisor's Kind
	Rolled  bool      // handover mode: the previous binary was started again (rolled_back)
	ReadyMS float64   // the supervisor's start-to-ready time
	Sent    time.Time // when HUP sent SIGHUP; zero otherwise
	At      time.Time // when the outcome was logged
	Start   int       // the log index of "upgrade started"
	End     int       // the log index of the outcome
}

// HUP sends SIGHUP, then waits up to d for the upgrade it starts and up to d
// again for its outcome.
func (s *Supervisor) HUP(d time.Duration) (Upgrade, error) {
	mark := s.Log.Len()
	sent := time.Now()
	if err := s.Signal(syscall.SIGHUP); err != nil {
		return Upgrade{}, err
	}
	u, err := s.WaitUpgrade(mark, d)
	u.Sent = sent
	return u, err
}

// WaitUpgrade waits up to d for the first upgrade started from log index
// from on, and up to d again for its outcome.
func (s *Supervisor) WaitUpgrade(from int, d time.Duration) (Upgrade, error) {
	st, i, err := s.Find(from, d, "upgrade started", func(e Entry) bool { return e.Is("upgrade started", "gen") })
	if err != nil {
		return Upgrade{}, err
	}
	return s.WaitOutcome(i, st.Int("gen"), d)
}

// WaitOutcome waits up to d for the outcome of the upgrade to generation gen,
// from log index from on: that of its "upgrade started", which becomes
// Upgrade.Start.
func (s *Supervisor) WaitOutcome(from, gen int, d time.Duration) (Upgrade, error) {
	e, i, err := s.Find(from, d, fmt.Sprintf("outcome of the upgrade to generation %d", gen), func(e Entry) bool {
		return (e.Is("upgrade succeeded", "gen") || e.Is("upgrade failed", "gen")) && e.Int("gen") == gen
	})
	if err != nil {
		return Upgrade{Gen: gen, Start: from}, err
	}
	u := Upgrade{
		OK: e.Msg() == "upgrade succeeded", Gen: gen, OldGen: e.Int("old_gen"),
		PIDs: e.Ints("pids"), OldPIDs: e.Ints("old_pids"), Reason: e.Str("reason"), Kind: e.Str("kind"), Rolled: e.Bool("rolled_back"),
		At: e.Time(), Start: from, End: i,
	}
	u.ReadyMS, _ = e.Num("ready_ms")
	return u, nil
}

// WaitDrained waits up to d for generation gen to have drained, logged from
// index from on, and returns that line.
func (s *Supervisor) WaitDrained(from, gen int, d time.Duration) (Entry, error) {
	e, _, err := s.Find(from, d, fmt.Sprintf("generation %d drained", gen), func(e Entry) bool {
		return e.Is("generation drained", "gen") && e.Int("gen") == gen
	})
	return e, err
}
