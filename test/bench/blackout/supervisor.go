package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// logLine is one line of the supervisor's output (its JSON log, and its
// workers' stderr).
type logLine struct {
	at     time.Time
	raw    string
	fields map[string]any
}

func (l logLine) msg() string {
	s, _ := l.fields["message"].(string)
	return s
}

func (l logLine) num(key string) float64 {
	f, _ := l.fields[key].(float64)
	return f
}

func (l logLine) ints(key string) []int {
	a, _ := l.fields[key].([]any)
	var out []int
	for _, v := range a {
		if f, ok := v.(float64); ok {
			out = append(out, int(f))
		}
	}
	return out
}

// supervisor is the supervisor under test, running the game in handover
// mode.
type supervisor struct {
	cmd    *exec.Cmd
	worker string // the path it runs; replaced by rename to upgrade
	wait   time.Duration

	mu      sync.Mutex
	lines   []logLine
	eof     bool
	changed chan struct{}
	done    chan struct{}
	at      int // lines before it have been waited for
}

func startSupervisor(bin, worker, snapshot string, wait time.Duration, workerArgs ...string) (*supervisor, error) {
	args := []string{"--mode", "handover", "--snapshot", snapshot, "--listen", "game=tcp://127.0.0.1:0",
		"--log-format", "json", "--ready-timeout", wait.String(), "--drain-timeout", wait.String(), "--", worker}
	s := &supervisor{worker: worker, wait: wait, changed: make(chan struct{}), done: make(chan struct{})}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	s.cmd = exec.Command(bin, append(args, workerArgs...)...)
	s.cmd.Stdout, s.cmd.Stderr = w, w
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	err = s.cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return nil, err
	}
	go s.read(r)
	go func() {
		s.cmd.Wait()
		close(s.done)
	}()
	return s, nil
}

func (s *supervisor) read(r *os.File) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := logLine{at: time.Now(), raw: sc.Text()}
		if strings.HasPrefix(l.raw, "{") {
			json.Unmarshal([]byte(l.raw), &l.fields)
		}
		s.mu.Lock()
		s.lines = append(s.lines, l)
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.eof = true
	close(s.changed)
	s.mu.Unlock()
}

// find waits for the first line from s.at on that match accepts, and moves
// s.at past it.
func (s *supervisor) find(what string, match func(logLine) bool) (logLine, error) {
	timer := time.NewTimer(s.wait)
	defer timer.Stop()
	for {
		s.mu.Lock()
		lines, eof, changed := s.lines[s.at:], s.eof, s.changed
		s.mu.Unlock()
		for i, l := range lines {
			if match(l) {
				s.at += i + 1
				return l, nil
			}
		}
		s.at += len(lines)
		if eof {
			return logLine{}, fmt.Errorf("supervisor exited before %s:\n%s", what, s.tail(30))
		}
		select {
		case <-changed:
		case <-timer.C:
			return logLine{}, fmt.Errorf("no %s within %v:\n%s", what, s.wait, s.tail(30))
		}
	}
}

func (s *supervisor) findMsg(msg string) (logLine, error) {
	return s.find(fmt.Sprintf("%q", msg), func(l logLine) bool { return l.msg() == msg })
}

func (s *supervisor) findRe(re *regexp.Regexp) ([]string, error) {
	var m []string
	_, err := s.find(re.String(), func(l logLine) bool {
		m = re.FindStringSubmatch(l.raw)
		return m != nil
	})
	return m, err
}

// tail returns the last n lines, for an error.
func (s *supervisor) tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, l := range s.lines[max(0, len(s.lines)-n):] {
		b.WriteString("  " + l.raw + "\n")
	}
	return b.String()
}

// stop sends SIGTERM and waits, then kills.
func (s *supervisor) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(s.wait):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// printLines prints lines [from, to) with the time each was read, relative
// to the first.
func (s *supervisor) printLines(from, to int) {
	s.mu.Lock()
	lines := s.lines[from:to]
	s.mu.Unlock()
	for _, l := range lines {
		fmt.Printf("  +%7.1fms %s\n", ms(l.at.Sub(lines[0].at)), l.raw)
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
	s.mu.Lock()
	defer s.mu.Unlock()
	w := bufio.NewWriter(f)
	fmt.Fprintf(w, "=== %s\n", heading)
	for _, l := range s.lines {
		fmt.Fprintf(w, "%s %s\n", l.at.Format("15:04:05.000000"), l.raw)
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintf(os.Stderr, "blackout: --log: %v\n", err)
	}
}
