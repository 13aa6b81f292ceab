package procwatch

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperEnv names the helper that the test binary runs instead of the tests.
const helperEnv = "PROCWATCH_TEST_HELPER"

// bound is the bound of every wait that should succeed.
const bound = 10 * time.Second

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		os.Exit(helpers[name]())
	}
	os.Exit(m.Run())
}

var helpers = map[string]func() int{
	// supervisor logs as the supervisor does: a socket, generation 1, and
	// an upgrade for each SIGHUP; "stopped" on SIGTERM.
	"supervisor": helperSupervisor,
	// exit logs one line and exits 3.
	"exit": func() int { logLine("bye"); return 3 },
	// ignoreterm ignores SIGTERM.
	"ignoreterm": func() int {
		signal.Ignore(syscall.SIGTERM)
		logLine("ignoring SIGTERM")
		time.Sleep(time.Minute)
		return 0
	},
	// orphan starts a sleeper, logs its pid and exits without waiting for it.
	"orphan": func() int {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), helperEnv+"=sleep")
		if err := cmd.Start(); err != nil {
			return 1
		}
		logLine("started", "pid", cmd.Process.Pid)
		return 0
	},
	"sleep": func() int { time.Sleep(time.Minute); return 0 },
}

// logLine writes a JSON line with message msg and the key-value pairs kv.
func logLine(msg string, kv ...any) {
	m := map[string]any{"time": time.Now().Format(time.RFC3339Nano), "message": msg}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	b, _ := json.Marshal(m)
	fmt.Fprintf(os.Stderr, "%s\n", b)
}

func helperSupervisor() int {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGHUP, syscall.SIGTERM)
	fmt.Println("not JSON")
	logLine("listening", "name", "http", "addr", "127.0.0.1:1234")
	gen, pid := 1, 100
	logLine("generation ready", "gen", gen, "pids", []int{pid})
	for sig := range c {
		if sig == syscall.SIGTERM {
			logLine("stopped")
			return 0
		}
		logLine("upgrade started", "gen", gen+1)
		logLine("upgrade succeeded", "gen", gen+1, "old_gen", gen, "pids", []int{pid + 1}, "old_pids", []int{pid}, "ready_ms", 12.5)
		logLine("generation drained", "gen", gen, "killed", 0)
		gen, pid = gen+1, pid+1
	}
	return 1
}

// startHelper starts the test binary as the named helper and stops it at
// the end of the test.
func startHelper(t *testing.T, name string) *Proc {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+name)
	p, err := Start(name, cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(bound) })
	return p
}

func TestSupervisor(t *testing.T) {
	s := &Supervisor{Proc: startHelper(t, "supervisor")}
	if addr, err := s.WaitListening("http", bound); err != nil || addr != "127.0.0.1:1234" {
		t.Fatalf("WaitListening: %q, %v", addr, err)
	}
	if pids, err := s.WaitReady(1, bound); err != nil || !slices.Equal(pids, []int{100}) {
		t.Fatalf("WaitReady: %v, %v", pids, err)
	}
	for gen := 2; gen <= 3; gen++ {
		u, err := s.HUP(bound)
		if err != nil {
			t.Fatal(err)
		}
		want := Upgrade{OK: true, Gen: gen, OldGen: gen - 1, PIDs: []int{99 + gen}, OldPIDs: []int{98 + gen}, ReadyMS: 12.5}
		if !u.OK || u.Gen != want.Gen || u.OldGen != want.OldGen || !slices.Equal(u.PIDs, want.PIDs) ||
			!slices.Equal(u.OldPIDs, want.OldPIDs) || u.ReadyMS != want.ReadyMS || u.End != u.Start+1 || u.Sent.IsZero() || u.At.Before(u.Sent) {
			t.Errorf("HUP: %+v, want %+v", u, want)
		}
		e, err := s.WaitDrained(u.End, u.OldGen, bound)
		if err != nil || e.Int("killed") != 0 {
			t.Errorf("WaitDrained: %v, %v", e.Raw, err)
		}
	}
	if e := s.Log.All()[0]; e.Raw != "not JSON" || e.Fields != nil || e.Time() != e.At {
		t.Errorf("first line %+v, want a plain line timed when read", e)
	}
	if err := s.Stop(bound); err != nil || s.Err() != nil {
		t.Fatalf("Stop: %v; exit: %v", err, s.Err())
	}
	if !s.Log.WaitEOF(bound) || !strings.Contains(s.Log.Tail(1), `"message":"stopped"`) {
		t.Errorf("output did not end with \"stopped\":\n%s", s.Log.Tail(3))
	}
}

func TestFind(t *testing.T) {
	never := func(Entry) bool { return false }
	s := startHelper(t, "supervisor")
	start := time.Now()
	if _, _, err := s.Find(0, 100*time.Millisecond, "nothing", never); !errors.Is(err, ErrTimeout) {
		t.Errorf("Find on a live process: %v, want ErrTimeout", err)
	}
	p := startHelper(t, "exit")
	_, i, err := p.Find(0, bound, "nothing", never)
	if !errors.Is(err, ErrEnded) || i != 1 {
		t.Errorf("Find on an exiting process: index %d, %v; want 1, ErrEnded", i, err)
	}
	var ee *exec.ExitError
	if !errors.As(p.Err(), &ee) || ee.ExitCode() != 3 {
		t.Errorf("Err() = %v, want exit status 3", p.Err())
	}
	if d := time.Since(start); d > bound/2 {
		t.Errorf("Find took %v", d)
	}
	if err := p.Signal(syscall.SIGTERM); err == nil {
		t.Errorf("Signal to a process waited for succeeded")
	}
}

func TestStopKills(t *testing.T) {
	p := startHelper(t, "ignoreterm")
	if _, _, err := p.Find(0, bound, "start", func(e Entry) bool { return e.Is("ignoring SIGTERM") }); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(200 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "SIGTERM") {
		t.Errorf("Stop: %v, want an error saying SIGTERM was not enough", err)
	}
	if !p.Exited() {
		t.Errorf("still running after Stop")
	}
}

func TestReapOrphans(t *testing.T) {
	if err := BecomeSubreaper(); err != nil {
		t.Fatal(err)
	}
	p := startHelper(t, "orphan")
	e, _, err := p.Find(0, bound, "started", func(e Entry) bool { return e.Is("started", "pid") })
	if err != nil {
		t.Fatal(err)
	}
	orphan := e.Int("pid")
	select {
	case <-p.Done():
	case <-time.After(bound):
		t.Fatal("orphan helper did not exit")
	}
	if st, err := ReadStat(orphan); err != nil || st.PPID != os.Getpid() {
		t.Fatalf("orphan %d: %+v, %v; want re-parented to us", orphan, st, err)
	}
	if pids, err := ReapOrphans(t.TempDir(), bound); len(pids) != 0 || err == nil {
		t.Errorf("ReapOrphans(elsewhere): %v, %v; want the orphan left alone and named", pids, err)
	}
	if pids, err := ReapOrphans("", bound); !slices.Equal(pids, []int{orphan}) || err != nil {
		t.Errorf("ReapOrphans: %v, %v; want [%d]", pids, err, orphan)
	}
	if _, err := ReadStat(orphan); err == nil {
		t.Errorf("orphan %d still in /proc after ReapOrphans", orphan)
	}
}

func TestProcFS(t *testing.T) {
	u, err := ReadUsage(os.Getpid())
	if err != nil || u.RSSKB <= 0 || u.HWMKB < u.RSSKB || u.Threads <= 0 || u.FDs < 3 {
		t.Errorf("ReadUsage(self) = %+v, %v", u, err)
	}
	if fds := FDs(os.Getpid()); len(fds) < 3 || !strings.HasPrefix(fds[0], "0=") {
		t.Errorf("FDs(self) = %v", fds)
	}
	if _, err := CPUTime(os.Getpid()); err != nil {
		t.Errorf("CPUTime(self): %v", err)
	}
	p := startHelper(t, "supervisor")
	if !slices.Contains(ChildPIDs(os.Getpid()), p.PID) {
		t.Errorf("ChildPIDs(self) = %v, want %d among them", ChildPIDs(os.Getpid()), p.PID)
	}
	if st, err := ReadStat(p.PID); err != nil || st.PPID != os.Getpid() || st.State == 'Z' {
		t.Errorf("ReadStat(child) = %+v, %v", st, err)
	}
	w, err := WatchExit(p.PID)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.Wait(50 * time.Millisecond) {
		t.Errorf("ExitWatch says a live process exited")
	}
	p.Stop(bound)
	if alive := WaitExited([]*ExitWatch{w}, bound); len(alive) > 0 {
		t.Errorf("WaitExited: %v still alive", alive)
	}
}

func TestBuild(t *testing.T) {
	b := Build{Out: "bin/x", Pkg: "./cmd/x", Tags: "a,b", LDFlags: "-X main.version=v", Race: true}
	want := []string{"build", "-o", "bin/x", "-tags", "a,b", "-ldflags", "-X main.version=v", "-race", "./cmd/x"}
	if got := b.Args(); !slices.Equal(got, want) {
		t.Errorf("Args() = %q, want %q", got, want)
	}
	if got := (Build{Out: "x", Pkg: "."}).Args(); !slices.Equal(got, []string{"build", "-o", "x", "."}) {
		t.Errorf("Args() of a plain build = %q", got)
	}
	dir := t.TempDir()
	src, dst := dir+"/src", dir+"/dst"
	if err := os.WriteFile(src, []byte("binary"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Install(dst, src); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(dst); err != nil || st.Mode().Perm() != 0o755 || st.Size() != int64(len("binary")) {
		t.Errorf("Install: %v, %v", st, err)
	}
}

// SchedTime counts this process's CPU in nanoseconds: a busy loop makes it
// grow past 5 ms well within a bound, however loaded the machine.
func TestSchedTime(t *testing.T) {
	before, err := SchedTime(os.Getpid())
	if err != nil || before <= 0 {
		t.Fatalf("SchedTime: %v, %v", before, err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		now, err := SchedTime(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if now-before >= 5*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SchedTime grew by %v in 10 s of a busy loop", now-before)
		}
	}
	if _, err := SchedTime(1 << 30); err == nil {
		t.Error("SchedTime of a PID that cannot exist: no error")
	}
}
