package container_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/handoff"
	"github.com/procswitch/supervisor/test/procwatch"
	"golang.org/x/sys/unix"
)

// orphanBound bounds the orphan's wait for its parent's exit, and the
// test's for the orphan's report and reaping.
const orphanBound = 30 * time.Second

// TestReapsOrphansAsPID1: as PID 1 of a PID namespace, the supervisor
// reaps the orphans of its workers (here, not as a subreaper: the
// namespace's init adopts every orphan), so that no zombie piles up in a
// container. The worker is this test binary (helperForker). It starts two
// children: one in its process group, which the supervisor kills when the
// worker exits (as systemd's KillMode=control-group), and one in a session
// of its own, as a daemon detaches, which outlives the worker, is adopted
// by PID 1, reports its new parent and exits. An upgrade drains the first
// worker; both its children must be reaped, and no zombie be left.
//
// It runs under `unshare --pid --fork --mount-proc`, not in the image's
// root filesystem: the test binary is not static.
func TestReapsOrphansAsPID1(t *testing.T) {
	im := needImage(t)
	unshare := needTool(t, "unshare", "util-linux")
	cmd := exec.Command(unshare, "--pid", "--fork", "--mount-proc", "--kill-child", "--",
		im.supervisor, "--listen", "http=tcp://127.0.0.1:0", "--log-format", "json", "--log-level", "debug",
		"--", os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=forker")
	p, err := procwatch.Start("unshare", cmd)
	if err != nil {
		t.Fatal(err)
	}
	sup := &procwatch.Supervisor{Proc: p}
	pid1 := 0
	t.Cleanup(func() {
		if !p.Exited() && pid1 > 0 {
			syscall.Kill(pid1, syscall.SIGTERM) // unshare does not pass SIGTERM on
			select {
			case <-p.Done():
			case <-time.After(orphanBound):
			}
		}
		if err := p.Stop(killBound); err != nil {
			t.Error(err)
		}
	})
	if _, _, err := sup.Find(0, startBound, "supervisor started as PID 1", func(e procwatch.Entry) bool {
		return e.Is("supervisor started", "pid") && e.Int("pid") == 1
	}); err != nil {
		t.Fatal(err)
	}
	kids := procwatch.ChildPIDs(p.PID)
	if len(kids) != 1 || nsPID(kids[0]) != 1 {
		t.Fatalf("unshare (pid %d) has children %v, want one, PID 1 of its namespace", p.PID, kids)
	}
	pid1 = kids[0]
	if _, err := sup.WaitReady(1, startBound); err != nil {
		t.Fatal(err)
	}
	first := forkerReport(t, sup)

	mark := sup.Log.Len()
	if err := syscall.Kill(pid1, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	u, err := sup.WaitUpgrade(mark, upgradeBound)
	if err != nil || !u.OK {
		t.Fatalf("upgrade: %+v, %v", u, err)
	}
	if _, err := sup.WaitDrained(u.End, u.OldGen, upgradeBound); err != nil {
		t.Fatal(err)
	}
	// The detached child, adopted, says whose child it is now, and exits.
	e, _, err := sup.Find(mark, orphanBound, fmt.Sprintf("the orphan %d's report", first.detached), func(e procwatch.Entry) bool {
		return strings.HasPrefix(e.Raw, fmt.Sprintf("orphan %d:", first.detached))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(e.Raw)
	if want := fmt.Sprintf("orphan %d: parent %d exited; parent now 1", first.detached, first.pid); e.Raw != want {
		t.Errorf("the orphan says %q, want %q: adopted by PID 1, the supervisor", e.Raw, want)
	}
	for pid, status := range map[int]string{first.grouped: "killed by SIGKILL", first.detached: "exit status 0"} {
		e, _, err := sup.Find(mark, orphanBound, fmt.Sprintf("orphan %d reaped", pid), func(e procwatch.Entry) bool {
			return e.Is("reaped orphan", "pid") && e.Int("pid") == pid
		})
		if err != nil {
			t.Errorf("%v\nprocesses in the namespace: %s", err, procs(descendants(pid1)))
			continue
		}
		t.Logf("PID 1 reaped orphan %d: %s", pid, e.Str("status"))
		if e.Str("status") != status {
			t.Errorf("orphan %d: %s, want %s", pid, e.Str("status"), status)
		}
	}
	if zs := zombies(pid1); len(zs) > 0 {
		t.Errorf("zombies in the namespace once the orphans were reaped: %s", procs(zs))
	}
	live := descendants(pid1)
	t.Logf("processes below PID 1 (host PIDs): %s", procs(live))
	if len(live) != 3 {
		t.Errorf("want 3 processes below PID 1, the second worker and its two children; got %s", procs(live))
	}

	mark = sup.Log.Len()
	if err := syscall.Kill(pid1, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
		if p.Err() != nil {
			t.Errorf("unshare (the supervisor's status): %v\n%s", p.Err(), p.Log.Tail(20))
		}
	case <-time.After(orphanBound):
		t.Fatalf("the supervisor did not exit within %v of SIGTERM\n%s", orphanBound, p.Log.Tail(20))
	}
	if _, _, err := sup.Find(mark, time.Second, "stopped", func(e procwatch.Entry) bool { return e.Is("stopped") }); err != nil {
		t.Error(err)
	}
}

// forker is a helperForker's report: its PID and its children's, in the
// PID namespace.
type forker struct{ pid, grouped, detached int }

// forkerReport waits for the first worker's report.
func forkerReport(t *testing.T, sup *procwatch.Supervisor) forker {
	t.Helper()
	var f forker
	_, _, err := sup.Find(0, startBound, "the worker's report", func(e procwatch.Entry) bool {
		n, _ := fmt.Sscanf(e.Raw, "forker %d: children %d %d", &f.pid, &f.grouped, &f.detached)
		return n == 3
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// helperForker is a worker that starts two children (helperOrphan), one in
// its process group and one in a session of its own, says it is ready, and
// on the drain signal exits without waiting for them.
func helperForker() error {
	w, err := handoff.New() // also unsets LISTEN_* and NOTIFY_SOCKET for the children
	if err != nil {
		return err
	}
	defer w.Close()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var pids []int
	for _, detach := range []bool{false, true} {
		child := exec.Command(self)
		child.Env = []string{helperEnv + "=orphan"}
		child.Stdout, child.Stderr = os.Stderr, os.Stderr // the supervisor's log
		child.SysProcAttr = &syscall.SysProcAttr{Setsid: detach}
		if err := child.Start(); err != nil {
			return err
		}
		pids = append(pids, child.Process.Pid)
	}
	fmt.Fprintf(os.Stderr, "forker %d: children %d %d\n", os.Getpid(), pids[0], pids[1])
	if err := w.Ready(); err != nil {
		return err
	}
	<-w.Draining()
	return nil
}

// helperOrphan waits for its parent to exit (a pidfd, opened while the
// parent lives, becomes readable), then says who its parent is now, and
// exits.
func helperOrphan() error {
	parent := os.Getppid()
	fd, err := unix.PidfdOpen(parent, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open(%d): %w", parent, err)
	}
	defer unix.Close(fd)
	if os.Getppid() != parent {
		return fmt.Errorf("parent %d exited before the pidfd was open", parent)
	}
	deadline := time.Now().Add(orphanBound)
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, max(0, int(time.Until(deadline).Milliseconds())))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("parent %d did not exit within %v", parent, orphanBound)
		}
		break
	}
	fmt.Fprintf(os.Stderr, "orphan %d: parent %d exited; parent now %d\n", os.Getpid(), parent, os.Getppid())
	return nil
}
