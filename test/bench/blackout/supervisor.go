package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"syscall"
	"time"

	"github.com/procswitch/supervisor/test/procwatch"
)

// logLine is one line of the supervisor's output (its JSON log, and its
// workers' stderr).
type logLine = procwatch.Entry

// num is a numeric field of l, 0 when it is missing.
func num(l logLine, key string) float64 {
	f, _ := l.Num(key)
	return f
}

// supervisor is the supervisor under test, running the game in handover
// mode.
type supervisor struct {
	*procwatch.Proc
	worker string // the path it runs; replaced by rename to upgrade
	wait   time.Duration
	at     int  // lines before it have been waited for
	live   bool // the game runs with --live: it logs no snapshot restore in a handover
}

// startSupervisor starts bin with its own flags supArgs and the game worker
// with workerArgs.
func startSupervisor(bin, worker, snapshot string, wait time.Duration, supArgs []string, workerArgs ...string) (*supervisor, error) {
	args := []string{"--mode", "handover", "--snapshot", snapshot, "--listen", "game=tcp://127.0.0.1:0",
		"--log-format", "json", "--ready-timeout", wait.String(), "--drain-timeout", wait.String()}
	args = append(append(append(args, supArgs...), "--", worker), workerArgs...)
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	p, err := procwatch.Start("supervisor", cmd)
	if err != nil {
		return nil, err
	}
	return &supervisor{Proc: p, worker: worker, wait: wait}, nil
}

// find waits for the first line from s.at on that match accepts, and moves
// s.at past it.
func (s *supervisor) find(what string, match func(logLine) bool) (logLine, error) {
	l, i, err := s.Find(s.at, s.wait, what, match)
	if err != nil {
		s.at = i
		return l, err
	}
	s.at = i + 1
	return l, nil
}

func (s *supervisor) findMsg(msg string) (logLine, error) {
	return s.find(fmt.Sprintf("%q", msg), func(l logLine) bool { return l.Msg() == msg })
}

func (s *supervisor) findRe(re *regexp.Regexp) ([]string, error) {
	var m []string
	_, err := s.find(re.String(), func(l logLine) bool {
		m = re.FindStringSubmatch(l.Raw)
		return m != nil
	})
	return m, err
}

// tail returns the last n lines, for an error.
func (s *supervisor) tail(n int) string { return s.Log.Tail(n) }

// stop sends SIGTERM and waits, then kills.
func (s *supervisor) stop() { s.Stop(s.wait) }

// printLines prints lines [from, to) with the time each was read, relative
// to the first.
func (s *supervisor) printLines(from, to int) {
	lines := s.Log.All()[from:to]
	for _, l := range lines {
		fmt.Printf("  +%7.1fms %s\n", ms(l.At.Sub(lines[0].At)), l.Raw)
	}
}

// save appends every line so far to file, under a heading.
func (s *supervisor) save(file, heading string) {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "blackout: --log: %v\n", err)
		return
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	fmt.Fprintf(w, "=== %s\n", heading)
	for _, l := range s.Log.All() {
		fmt.Fprintf(w, "%s %s\n", l.At.Format("15:04:05.000000"), l.Raw)
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintf(os.Stderr, "blackout: --log: %v\n", err)
	}
}
