package proc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestDescribe(t *testing.T) {
	tests := []struct {
		ws   unix.WaitStatus
		want string
	}{
		{0, "exit status 0"},
		{1 << 8, "exit status 1"},
		{127 << 8, "exit status 127"},
		{255 << 8, "exit status 255"},
		{unix.WaitStatus(unix.SIGKILL), "killed by SIGKILL"},
		{unix.WaitStatus(unix.SIGTERM), "killed by SIGTERM"},
		{unix.WaitStatus(unix.SIGSEGV) | 0x80, "killed by SIGSEGV"}, // core dumped
		{0x7f | unix.WaitStatus(unix.SIGSTOP)<<8, "wait status 0x137f"},
		{0xffff, "wait status 0xffff"}, // continued
	}
	for _, tt := range tests {
		if got := Describe(tt.ws); got != tt.want {
			t.Errorf("Describe(%#x) = %q, want %q", uint32(tt.ws), got, tt.want)
		}
	}
}

func TestStartExitStatus(t *testing.T) {
	r := newReaper(t)
	for _, code := range []int{0, 1, 7, 255} {
		before := time.Now()
		p := r.start(t, "exit", nil, codeEnv+"="+strconv.Itoa(code))
		if p.Pid <= 0 || p.Started.Before(before) || p.Started.After(time.Now()) {
			t.Errorf("Pid %d, Started %v: want a PID and the start time", p.Pid, p.Started)
		}
		ws := waitDone(t, p)
		if !ws.Exited() || ws.ExitStatus() != code {
			t.Errorf("exit %d: status %s", code, Describe(ws))
		}
		if got, want := Describe(ws), fmt.Sprintf("exit status %d", code); got != want {
			t.Errorf("Describe = %q, want %q", got, want)
		}
	}
}

func TestSignalledAndSignalAfterReap(t *testing.T) {
	r := newReaper(t)
	rep, hold := newPipe(t), newPipe(t)
	lines := reportLines(rep)
	p := r.start(t, "wait", []int{rep.wfd(), hold.rfd()})
	if l := nextLine(t, lines); l != "ready" {
		t.Fatalf("helper said %q", l)
	}
	select {
	case <-p.Done():
		t.Fatal("Done closed while the process runs")
	default:
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("Signal(SIGTERM): %v", err)
	}
	ws := waitDone(t, p)
	if !ws.Signaled() || ws.Signal() != syscall.SIGTERM || Describe(ws) != "killed by SIGTERM" {
		t.Errorf("status %s, want killed by SIGTERM", Describe(ws))
	}
	// Reaped: its PID may be somebody else's now, so it is never signalled.
	if err := p.Signal(syscall.SIGTERM); !errors.Is(err, ErrProcessDone) || !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("Signal after reap = %v, want ErrProcessDone", err)
	}
	if err := p.Signal(0); !errors.Is(err, ErrProcessDone) {
		t.Errorf("Signal(0) after reap = %v, want ErrProcessDone", err)
	}
	if err := p.Kill(); err != nil {
		t.Errorf("Kill after reap = %v, want nil (idempotent)", err)
	}
}

func TestKillIdempotent(t *testing.T) {
	r := newReaper(t)
	rep, hold := newPipe(t), newPipe(t)
	lines := reportLines(rep)
	p := r.start(t, "wait", []int{rep.wfd(), hold.rfd()})
	nextLine(t, lines)
	for i := range 3 {
		if err := p.Kill(); err != nil {
			t.Errorf("Kill #%d: %v", i+1, err)
		}
	}
	if ws := waitDone(t, p); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("status %s, want killed by SIGKILL", Describe(ws))
	}
	if err := p.Kill(); err != nil {
		t.Errorf("Kill after reap: %v", err)
	}
}

func TestStartError(t *testing.T) {
	r := newReaper(t)
	missing := filepath.Join(t.TempDir(), "no-such-worker")
	_, err := r.Start(&Command{Path: missing, Args: []string{missing}})
	if err == nil || !errors.Is(err, syscall.ENOENT) || !strings.HasPrefix(err.Error(), "proc: start "+missing) {
		t.Errorf("Start(missing) = %v, want a proc: start error wrapping ENOENT", err)
	}
	notExec := filepath.Join(t.TempDir(), "not-executable")
	if err := os.WriteFile(notExec, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Start(&Command{Path: notExec, Args: []string{notExec}}); !errors.Is(err, syscall.EACCES) {
		t.Errorf("Start(not executable) = %v, want EACCES", err)
	}
}

// The child gets exactly the environment and directory asked for, and a
// process group of its own.
func TestStartEnvDirGroup(t *testing.T) {
	r := newReaper(t)
	rep := newPipe(t)
	lines := reportLines(rep)
	dir := t.TempDir()
	exe := executable(t)
	env := []string{helperEnv + "=env", "ONLY_THIS=1", "GORACE=atexit_sleep_ms=0"}
	p, err := r.Start(&Command{Path: exe, Args: []string{exe}, Env: env, Dir: dir, Files: []int{rep.wfd()}})
	if err != nil {
		t.Fatal(err)
	}
	var gotEnv []string
	for l := nextLine(t, lines); l != "end"; l = nextLine(t, lines) {
		switch {
		case strings.HasPrefix(l, "dir "):
			if got := strings.TrimPrefix(l, "dir "); got != dir {
				t.Errorf("working directory %q, want %q", got, dir)
			}
		case strings.HasPrefix(l, "pgid "):
			if want := fmt.Sprintf("pgid %d pid %d", p.Pid, p.Pid); l != want {
				t.Errorf("%q, want %q: the child leads its own process group", l, want)
			}
		case strings.HasPrefix(l, "env "):
			gotEnv = append(gotEnv, strings.TrimPrefix(l, "env "))
		}
	}
	if !slices.Equal(gotEnv, env) {
		t.Errorf("environment %q, want exactly %q", gotEnv, env)
	}
	if ws := waitDone(t, p); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("status %s", Describe(ws))
	}
}

// SIGCHLDs coalesce; the reaper still reaps every child and gives each its
// own status.
func TestManyChildren(t *testing.T) {
	r := newReaper(t)
	const n = 12
	ps := make([]*Process, n)
	for i := range ps {
		ps[i] = r.start(t, "exit", nil, codeEnv+"="+strconv.Itoa(10+i))
	}
	for i, p := range ps {
		if ws := waitDone(t, p); !ws.Exited() || ws.ExitStatus() != 10+i {
			t.Errorf("child %d (pid %d): %s, want exit status %d", i, p.Pid, Describe(ws), 10+i)
		}
	}
	select {
	case o := <-r.orphans:
		t.Errorf("a started child was reported as an orphan: %d %s", o.pid, Describe(o.status))
	default:
	}
}

// Kill kills the whole process group: a worker's own child dies with it.
func TestKillKillsGroup(t *testing.T) {
	r := newReaper(t)
	rep, hold := newPipe(t), newPipe(t)
	lines := reportLines(rep)
	p := r.start(t, "spawn", []int{rep.wfd(), hold.rfd()}, nextEnv+"=wait", thenEnv+"=wait")
	gc, _ := grandchild(t, lines, "ready")
	if err := p.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if ws := waitDone(t, p); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("child: %s, want killed by SIGKILL", Describe(ws))
	}
	// The grandchild, re-parented to us, is reaped as an orphan; it died of
	// the same SIGKILL, not of its hold pipe closing (the test holds that).
	if ws := r.waitOrphan(t, gc); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("grandchild: %s, want killed by SIGKILL", Describe(ws))
	}
}

// A worker's child that outlives it is re-parented to us (a subreaper), not to
// PID 1, and is reaped and reported when it exits.
func TestOrphanReaped(t *testing.T) {
	r := newReaper(t)
	rep, hold := newPipe(t), newPipe(t)
	lines := reportLines(rep)
	p := r.start(t, "spawn", []int{rep.wfd(), hold.rfd()}, nextEnv+"=wait", thenEnv+"=exit")
	gc, _ := grandchild(t, lines, "ready")
	if ws := waitDone(t, p); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("child: %s", Describe(ws))
	}
	// The child is gone and the grandchild runs on, re-parented to us.
	if ppid, ok := parentOf(gc); !ok || ppid != os.Getpid() {
		t.Errorf("orphan %d has parent %d (alive: %v), want us (%d), the subreaper", gc, ppid, ok, os.Getpid())
	}
	hold.w.Close() // let the grandchild go
	if ws := r.waitOrphan(t, gc); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("orphan: %s, want exit status 0", Describe(ws))
	}
	// Reaped, not left a zombie: the PID is gone (or, reused already,
	// belongs to a process that is not our child).
	if ppid, ok := parentOf(gc); ok && ppid == os.Getpid() {
		t.Errorf("orphan %d still our child (a zombie?) after being reported", gc)
	}
}

// If the supervisor dies, its workers die too (PR_SET_PDEATHSIG), even those
// whose own children are in other process groups.
func TestPdeathsig(t *testing.T) {
	r := newReaper(t)
	rep, hold := newPipe(t), newPipe(t)
	lines := reportLines(rep)
	p := r.start(t, "pdeath", []int{rep.wfd(), hold.rfd()}, nextEnv+"=wait")
	gc, _ := grandchild(t, lines, "ready")
	// Only the intermediate supervisor: the grandchild leads its own group.
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if ws := waitDone(t, p); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("intermediate: %s", Describe(ws))
	}
	// Its hold pipe is still open here, so only PDEATHSIG can have killed it.
	if ws := r.waitOrphan(t, gc); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("grandchild: %s, want killed by SIGKILL (PDEATHSIG)", Describe(ws))
	}
}

// kcmp(2) KCMP_FILE: whether two fds, in two processes, are one open file.
func sameFile(pid1, pid2, fd1, fd2 int) (bool, error) {
	const kcmpFile = 0
	r, _, errno := syscall.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), kcmpFile, uintptr(fd1), uintptr(fd2), 0)
	if errno != 0 {
		return false, errno
	}
	return r == 0, nil
}

// ourFDs lists this process's fds with their close-on-exec flag.
func ourFDs(t *testing.T) map[int]bool {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	fds := map[int]bool{}
	for _, e := range ents {
		fd, _ := strconv.Atoi(e.Name())
		fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil {
			continue // the directory's own fd, closed by now
		}
		fds[fd] = fl&unix.FD_CLOEXEC != 0
	}
	return fds
}

// The child gets fds 0, 1, 2 and Files as 3, 4, …, and none of our other
// (close-on-exec) fds.
func TestStartPassesExactlyStdioAndFiles(t *testing.T) {
	if ok, err := sameFile(os.Getpid(), os.Getpid(), 0, 0); err != nil || !ok {
		t.Skipf("kcmp(2) unavailable: %v", err)
	}
	r := newReaper(t)
	rep, hold := newPipe(t), newPipe(t)
	lines := reportLines(rep)
	// Canaries: fds of ours a careless Start would leak.
	newPipe(t)
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sp[0])
	defer unix.Close(sp[1])

	files := []int{rep.wfd(), hold.rfd(), sp[1]}
	p := r.start(t, "fds", files)
	var childFDs []int
	for l := nextLine(t, lines); l != "end"; l = nextLine(t, lines) {
		fd, err := strconv.Atoi(strings.TrimPrefix(l, "fd "))
		if err != nil {
			t.Fatalf("report %q", l)
		}
		childFDs = append(childFDs, fd)
	}
	ours := ourFDs(t)

	expect := map[int]int{0: 0, 1: 1, 2: 2} // child fd → our fd
	for i, fd := range files {
		expect[3+i] = fd
	}
	for c, want := range expect {
		if !slices.Contains(childFDs, c) {
			t.Errorf("child lacks fd %d", c)
			continue
		}
		if same, err := sameFile(os.Getpid(), p.Pid, want, c); err != nil || !same {
			t.Errorf("child fd %d is not our fd %d (%v)", c, want, err)
		}
	}
	for _, c := range childFDs {
		if _, ok := expect[c]; ok {
			continue
		}
		for fd, cloexec := range ours {
			same, err := sameFile(os.Getpid(), p.Pid, fd, c)
			if err != nil || !same {
				continue
			}
			if cloexec {
				t.Errorf("child fd %d is our close-on-exec fd %d: leaked", c, fd)
			} else {
				// Not ours to close: inherited by the test binary from
				// whatever started it (see TestStartLeaksInheritedFDs).
				t.Logf("child fd %d is our fd %d, which we inherited without close-on-exec", c, fd)
			}
		}
	}
	hold.w.Close()
	if ws := waitDone(t, p); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("status %s", Describe(ws))
	}
}

// Start claims that the child receives exactly stdio plus Files, relying on
// every other fd of the supervisor being close-on-exec. Fds the supervisor
// itself inherited without close-on-exec (from a shell, a CI runner, a
// process manager other than systemd) are not, and pass on to every worker.
// Reproduction: a "pdeath"-like intermediate that inherited an extra fd starts
// a child with Start; the child holds that fd too.
func TestStartLeaksInheritedFDs(t *testing.T) {
	r := newReaper(t)
	rep, hold, stray := newPipe(t), newPipe(t), newPipe(t)
	lines := reportLines(rep)
	// The intermediate inherits stray's write end as its fd 5, as a
	// supervisor inherits an fd from whatever started it.
	p := r.start(t, "pdeath", []int{rep.wfd(), hold.rfd(), stray.wfd()}, nextEnv+"=fds")
	gc, childFDs := grandchild(t, lines, "end")
	if same, err := sameFile(os.Getpid(), gc, stray.wfd(), 5); err == nil && same {
		t.Errorf("worker %d received the supervisor's inherited fd 5 (fds %v): want only 0, 1, 2, 3, 4", gc, childFDs)
	}
	p.Kill()
	waitDone(t, p)
	r.waitOrphan(t, gc)
}

// Signal and Kill on a process that has exited but is not yet reaped: the
// zombie still holds its PID, so signalling it is safe and not an error.
// A Reaper without its loop stands still long enough to see this.
func TestSignalZombie(t *testing.T) {
	r := &Reaper{children: map[int]*Process{}}
	exe := executable(t)
	p, err := r.Start(&Command{Path: exe, Args: []string{exe}, Env: append(helperEnviron("exit"), codeEnv+"=3")})
	if err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() {
		var info unix.Siginfo
		exited <- unix.Waitid(unix.P_PID, p.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
	}()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("waitid: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("pid %d did not exit within %v", p.Pid, waitTimeout)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("Signal(zombie) = %v, want nil", err)
	}
	if err := p.Kill(); err != nil {
		t.Errorf("Kill(zombie) = %v, want nil", err)
	}
	select {
	case <-p.Done():
		t.Fatal("Done closed before the reap")
	default:
	}
	r.reap()
	if ws := waitDone(t, p); !ws.Exited() || ws.ExitStatus() != 3 {
		t.Errorf("status %s, want exit status 3", Describe(ws))
	}
	if err := p.Signal(syscall.SIGTERM); !errors.Is(err, ErrProcessDone) {
		t.Errorf("Signal after reap = %v", err)
	}
}

func TestReaperCloseReturns(t *testing.T) {
	r, err := NewReaper(nil)
	if err != nil {
		t.Fatal(err)
	}
	var flag int32
	if err := unix.Prctl(unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafe.Pointer(&flag)), 0, 0, 0); err != nil || flag != 1 {
		t.Errorf("PR_GET_CHILD_SUBREAPER = %d, %v; want 1 after NewReaper", flag, err)
	}
	done := make(chan struct{})
	go func() { r.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("Close did not return")
	}
}

// TestHoldOrphans: while orphans are held, a process that the Reaper did not
// start (as tableflip starts a successor supervisor) is left for its own
// parent code to wait for, and gets its real exit status, not ECHILD; the
// Reaper's own children are still reaped; an orphan that exits meanwhile is
// reaped once the hold is released.
func TestHoldOrphans(t *testing.T) {
	r := newReaper(t)
	release := r.HoldOrphans()
	defer release()

	exe := executable(t)
	other, err := os.StartProcess(exe, []string{exe}, &os.ProcAttr{
		Env:   append(helperEnviron("exit"), codeEnv+"=3"),
		Files: []*os.File{nil, os.Stdout, os.Stderr},
	})
	if err != nil {
		t.Fatal(err)
	}
	ours := r.start(t, "exit", nil, codeEnv+"=7")
	if ws := waitDone(t, ours); !ws.Exited() || ws.ExitStatus() != 7 {
		t.Errorf("the Reaper's own child, during a hold: %s, want exit status 7", Describe(ws))
	}
	waited := make(chan error, 1)
	go func() {
		st, err := other.Wait()
		if err == nil && st.ExitCode() != 3 {
			err = fmt.Errorf("exit code %d, want 3", st.ExitCode())
		}
		waited <- err
	}()
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("waiting for a process the Reaper did not start, during a hold: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("pid %d not waited for within %v", other.Pid, waitTimeout)
	}

	// An orphan that exits during the hold stays a zombie until the release.
	rep, hold := newPipe(t), newPipe(t)
	lines := reportLines(rep)
	p := r.start(t, "spawn", []int{rep.wfd(), hold.rfd()}, nextEnv+"=wait", thenEnv+"=exit")
	gc, _ := grandchild(t, lines, "ready")
	waitDone(t, p)
	hold.w.Close() // let the grandchild go
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, gc, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatalf("waiting for orphan %d to exit, without reaping it: %v", gc, err)
	}
	if ppid, ok := parentOf(gc); !ok || ppid != os.Getpid() {
		t.Errorf("orphan %d reaped during the hold (parent %d, there: %v)", gc, ppid, ok)
	}
	release()
	if ws := r.waitOrphan(t, gc); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("orphan after the release: %s, want exit status 0", Describe(ws))
	}
}

// TestAdopt: after a re-exec in place, the new image's Reaper adopts the
// children it had: one that exited meanwhile (a zombie) is reaped with its
// status, one still running is reaped when it exits, and a PID that is not
// a child of ours (reaped before the exec, perhaps reused) is done at once
// with exit status 255.
func TestAdopt(t *testing.T) {
	exe := executable(t)
	start := func(helper string, files []uintptr, env ...string) int {
		t.Helper()
		pid, err := syscall.ForkExec(exe, []string{exe}, &syscall.ProcAttr{
			Env: append(helperEnviron(helper), env...), Files: append([]uintptr{0, 1, 2}, files...)})
		if err != nil {
			t.Fatal(err)
		}
		return pid
	}
	zombie := start("exit", nil, codeEnv+"=7")
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, zombie, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatalf("waiting for %d to exit, without reaping it: %v", zombie, err)
	}
	rep, hold := newPipe(t), newPipe(t)
	lines := reportLines(rep)
	running := start("wait", []uintptr{uintptr(rep.wfd()), uintptr(hold.rfd())})
	if line := <-lines; line != "ready" {
		t.Fatalf("the running child said %q, want ready", line)
	}
	started := time.Now()

	r, err := NewReaper(nil, Adoptee{PID: zombie, Started: started}, Adoptee{PID: running, Started: started},
		Adoptee{PID: os.Getppid(), Started: started})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if ws := waitDone(t, r.Adopted(zombie)); !ws.Exited() || ws.ExitStatus() != 7 {
		t.Errorf("the adopted zombie: %s, want exit status 7", Describe(ws))
	}
	if ws := waitDone(t, r.Adopted(os.Getppid())); !ws.Exited() || ws.ExitStatus() != 255 {
		t.Errorf("a PID that is not our child: %s, want exit status 255", Describe(ws))
	}
	p := r.Adopted(running)
	if p.StartTime() != started {
		t.Errorf("adopted start time %v, want %v", p.StartTime(), started)
	}
	select {
	case <-p.Done():
		t.Fatalf("the running adoptee %d is done before it exited: %s", running, Describe(p.Status()))
	default:
	}
	hold.w.Close()
	if ws := waitDone(t, p); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("the adopted running child: %s, want exit status 0", Describe(ws))
	}
}
