package proc

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary doubles as every process the tests start: TestMain runs the
// exec shim for ShimArg, as the supervisor's main does, and otherwise
// dispatches on helperEnv to a named helper. In a build with the shim's fast
// path (shim_cgo.go), that path runs before TestMain and execs the worker
// without it; the "goshim" helper runs RunShim itself, so that the tests can
// run each case through both.
//
// Helpers talk to the test through the fds Start passes: fd 3 is the write
// end of a report pipe, fd 4 (when given) the read end of a hold pipe whose
// EOF, when the test closes its write end, tells the helper to go.
//
// One Reaper at a time waits for every child of this process, so the tests
// here run one after another (no t.Parallel), and a test that uses exec.Cmd
// runs with no Reaper live.
const (
	helperEnv = "PROC_TEST_HELPER"
	codeEnv   = "PROC_TEST_CODE"       // "exit": the status to exit with
	nextEnv   = "PROC_TEST_GRANDCHILD" // "spawn", "pdeath": the helper the grandchild runs
	thenEnv   = "PROC_TEST_THEN"       // "spawn": "exit" at once, or "wait" on fd 4
	shimEnv   = "PROC_TEST_SHIM"       // set to "go" by RunShim's callers here, for the worker to report
)

// waitTimeout bounds every wait for a process, a report line or a reap.
const waitTimeout = 30 * time.Second

var helpers = map[string]func() error{
	"exit":     helperExit,
	"wait":     helperWait,
	"env":      helperEnvReport,
	"fds":      helperFDs,
	"spawn":    helperSpawn,
	"pdeath":   helperPdeath,
	"printpid": helperPrintPID,
	"goshim":   helperGoShim,
	"interp":   helperInterp,
	"sigign":   helperSigIgn,
}

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == ShimArg {
		os.Setenv(shimEnv, "go")
		os.Exit(RunShim(os.Args[2:]))
	}
	name := os.Getenv(helperEnv)
	if name == "" {
		os.Exit(m.Run())
	}
	fn, ok := helpers[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "proc test: unknown helper %q\n", name)
		os.Exit(2)
	}
	if err := fn(); err != nil {
		fmt.Fprintf(os.Stderr, "proc test: helper %s (pid %d): %v\n", name, os.Getpid(), err)
		os.Exit(1)
	}
	os.Exit(0)
}

func report(format string, args ...any) error {
	_, err := unix.Write(3, []byte(fmt.Sprintf(format, args...)+"\n"))
	return err
}

// holdUntilEOF blocks until every write end of the hold pipe (fd 4) closes.
func holdUntilEOF() error {
	_, err := io.Copy(io.Discard, os.NewFile(4, "hold"))
	return err
}

func helperExit() error {
	code, err := strconv.Atoi(os.Getenv(codeEnv))
	if err != nil {
		return err
	}
	os.Exit(code)
	return nil
}

func helperWait() error {
	if err := report("ready"); err != nil {
		return err
	}
	return holdUntilEOF()
}

func helperEnvReport() error {
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	pgid, err := unix.Getpgid(0)
	if err != nil {
		return err
	}
	if err := report("dir %s", wd); err != nil {
		return err
	}
	if err := report("pgid %d pid %d", pgid, os.Getpid()); err != nil {
		return err
	}
	for _, kv := range os.Environ() {
		if err := report("env %s", kv); err != nil {
			return err
		}
	}
	return report("end")
}

// helperFDs reports its open fds, then stays alive on fd 4 so that the test
// can compare them with its own.
func helperFDs() error {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := report("fd %s", e.Name()); err != nil {
			return err
		}
	}
	if err := report("end"); err != nil {
		return err
	}
	return holdUntilEOF()
}

// helperSpawn starts a grandchild as a worker starts its own children: plain
// fork and exec, in the worker's process group, without PDEATHSIG; fds 3 and
// 4 are passed on. It reports the grandchild's PID, then exits at once or
// waits on fd 4.
func helperSpawn() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	env := grandchildEnviron()
	pid, err := syscall.ForkExec(exe, []string{exe}, &syscall.ProcAttr{Env: env, Files: []uintptr{0, 1, 2, 3, 4}})
	if err != nil {
		return err
	}
	if err := report("grandchild %d", pid); err != nil {
		return err
	}
	if os.Getenv(thenEnv) == "exit" {
		return nil
	}
	return holdUntilEOF()
}

// helperPdeath is a supervisor in miniature: it runs a Reaper, starts a
// grandchild with Start, reports its PID and waits on fd 4.
func helperPdeath() error {
	r, err := NewReaper(nil)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	p, err := r.Start(&Command{
		Path:  exe,
		Args:  []string{exe},
		Env:   grandchildEnviron(),
		Files: []int{3, 4},
	})
	if err != nil {
		return err
	}
	if err := report("grandchild %d", p.Pid); err != nil {
		return err
	}
	return holdUntilEOF()
}

// grandchildEnviron is our environment with the helper replaced by the one
// nextEnv names (Getenv takes the first of duplicates: appending is not
// enough).
func grandchildEnviron() []string {
	env := []string{helperEnv + "=" + os.Getenv(nextEnv)}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, helperEnv+"=") && !strings.HasPrefix(kv, nextEnv+"=") {
			env = append(env, kv)
		}
	}
	return env
}

// helperPrintPID reports what the shim gave it: the PID variables, its own
// PID and arguments, which shim ran ("go" for RunShim, "" for the fast path),
// whether SUPERVISOR_EXEC_FD reached it and whether it holds its own
// executable open at some fd.
func helperPrintPID() error {
	execFD, ok := os.LookupEnv(EnvExecFD)
	if !ok {
		execFD = "unset"
	}
	return report("LISTEN_PID=%s WATCHDOG_PID=%s pid=%d args=%q shim=%q %s=%s holdsexe=%v",
		os.Getenv("LISTEN_PID"), os.Getenv("WATCHDOG_PID"), os.Getpid(), os.Args[1:],
		os.Getenv(shimEnv), EnvExecFD, execFD, holdsOwnExecutable())
}

// helperSigIgn reports the signals the worker started with ignored: the
// SigIgn mask of /proc/self/status.
func helperSigIgn() error {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigIgn:"); ok {
			return report("SigIgn=%s shim=%q", strings.TrimSpace(v), os.Getenv(shimEnv))
		}
	}
	return fmt.Errorf("no SigIgn in /proc/self/status")
}

// holdsOwnExecutable says whether one of this process's fds is its
// executable.
func holdsOwnExecutable() bool {
	var exe unix.Stat_t
	if unix.Stat("/proc/self/exe", &exe) != nil {
		return false
	}
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		var st unix.Stat_t
		if unix.Stat("/proc/self/fd/"+e.Name(), &st) == nil && st.Dev == exe.Dev && st.Ino == exe.Ino {
			return true
		}
	}
	return false
}

// helperInterp is the interpreter of the tests' "#!" scripts (see
// installScript): the kernel runs it with the script's path, as the shim
// executed it, then the worker's arguments. It reports that path, the
// script's body (what follows the "#!" line) and what the shim gave it.
func helperInterp() error {
	if len(os.Args) < 2 {
		return fmt.Errorf("run as a script interpreter, without a script")
	}
	b, err := os.ReadFile(os.Args[1])
	if err != nil {
		return err
	}
	_, body, _ := strings.Cut(string(b), "\n")
	execFD, ok := os.LookupEnv(EnvExecFD)
	if !ok {
		execFD = "unset"
	}
	return report("script=%s body=%q args=%q LISTEN_PID=%s pid=%d shim=%q %s=%s",
		os.Args[1], body, os.Args[2:], os.Getenv("LISTEN_PID"), os.Getpid(), os.Getenv(shimEnv), EnvExecFD, execFD)
}

// helperGoShim is shim mode through RunShim whatever the build: its
// arguments are the worker's command line, and the worker runs the helper
// nextEnv names.
func helperGoShim() error {
	os.Setenv(helperEnv, os.Getenv(nextEnv))
	os.Unsetenv(nextEnv)
	os.Setenv(shimEnv, "go")
	os.Exit(RunShim(os.Args[1:]))
	return nil
}

// --- the test side ---

// testReaper is a Reaper for one test that records orphans.
type testReaper struct {
	*Reaper
	orphans chan orphan
}

type orphan struct {
	pid    int
	status unix.WaitStatus
}

// newReaper starts a Reaper that is closed when the test ends, after the
// processes started through start are gone.
func newReaper(t *testing.T) *testReaper {
	t.Helper()
	orphans := make(chan orphan, 64)
	r, err := NewReaper(func(pid int, ws unix.WaitStatus) {
		select {
		case orphans <- orphan{pid, ws}:
		default: // never block the reaper; a test that cares reads in time
		}
	})
	if err != nil {
		t.Fatalf("NewReaper: %v", err)
	}
	t.Cleanup(r.Close)
	return &testReaper{Reaper: r, orphans: orphans}
}

// start starts a helper with the given Files and extra environment. When the
// test ends the process, if still running, is killed and reaped.
func (r *testReaper) start(t *testing.T, helper string, files []int, env ...string) *Process {
	t.Helper()
	exe := executable(t)
	p, err := r.Start(&Command{
		Path:  exe,
		Args:  []string{exe},
		Env:   append(helperEnviron(helper), env...),
		Files: files,
	})
	if err != nil {
		t.Fatalf("Start(%s): %v", helper, err)
	}
	t.Cleanup(func() {
		p.Kill()
		select {
		case <-p.Done():
		case <-time.After(waitTimeout):
			t.Errorf("pid %d (%s) not reaped within %v", p.Pid, helper, waitTimeout)
		}
	})
	return p
}

// waitOrphan waits, bounded, for the reaper to report pid as an orphan.
func (r *testReaper) waitOrphan(t *testing.T, pid int) unix.WaitStatus {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case o := <-r.orphans:
			if o.pid == pid {
				return o.status
			}
			t.Logf("orphan %d reaped (%s), waiting for %d", o.pid, Describe(o.status), pid)
		case <-timeout:
			t.Fatalf("orphan %d not reaped within %v", pid, waitTimeout)
		}
	}
}

func executable(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// helperEnviron is our environment for a helper: without variables that
// would confuse it, and without the race detector's one-second sleep at exit.
func helperEnviron(helper string) []string {
	env := []string{helperEnv + "=" + helper, "GORACE=atexit_sleep_ms=0 " + os.Getenv("GORACE")}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PROC_TEST_") || strings.HasPrefix(kv, "GORACE=") ||
			strings.HasPrefix(kv, "LISTEN_") || strings.HasPrefix(kv, "WATCHDOG_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// waitDone waits, bounded, until p has been reaped.
func waitDone(t *testing.T, p *Process) unix.WaitStatus {
	t.Helper()
	select {
	case <-p.Done():
		return p.Status()
	case <-time.After(waitTimeout):
		t.Fatalf("pid %d not reaped within %v", p.Pid, waitTimeout)
	}
	return 0
}

// pipe is an os.Pipe whose ends the test closes when it ends.
type pipe struct {
	r, w *os.File
}

func newPipe(t *testing.T) *pipe {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return &pipe{r: r, w: w}
}

// wfd and rfd are the raw fds, for Command.Files.
func (p *pipe) wfd() int { return int(p.w.Fd()) }
func (p *pipe) rfd() int { return int(p.r.Fd()) }

// reportLines reads lines from a report pipe's read end; the channel closes
// at EOF (every writer gone).
func reportLines(p *pipe) <-chan string {
	ch := make(chan string, 256)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(p.r)
		for sc.Scan() {
			ch <- sc.Text()
		}
	}()
	return ch
}

// nextLine waits, bounded, for the next report line.
func nextLine(t *testing.T, lines <-chan string) string {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatal("report pipe closed before the expected line")
		}
		return l
	case <-time.After(waitTimeout):
		t.Fatalf("no report line within %v", waitTimeout)
	}
	return ""
}

// grandchild reads report lines until it has both the intermediate's
// "grandchild PID" and the grandchild's own lines up to last (the two
// processes write independently, so their lines may come in either order).
// It returns the PID and the grandchild's lines before last.
func grandchild(t *testing.T, lines <-chan string, last string) (int, []string) {
	t.Helper()
	pid := 0
	var own []string
	for seenLast := false; pid == 0 || !seenLast; {
		l := nextLine(t, lines)
		switch {
		case strings.HasPrefix(l, "grandchild "):
			n, err := strconv.Atoi(strings.TrimPrefix(l, "grandchild "))
			if err != nil || n <= 0 {
				t.Fatalf("report %q", l)
			}
			pid = n
		case l == last:
			seenLast = true
		default:
			own = append(own, l)
		}
	}
	return pid, own
}

// parentOf reads the parent PID of pid from /proc/PID/stat; false if there is
// no such process.
func parentOf(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// "PID (COMM) STATE PPID …"; COMM may hold spaces and parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}
