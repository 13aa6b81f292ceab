package test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// started holds the PIDs of the processes this test binary started with
// os/exec and has not yet waited for; every other child of ours is an orphan
// re-parented to us (we are a child subreaper) and ours to reap.
var started struct {
	sync.Mutex
	pids map[int]bool
}

func addStarted(pid int) {
	started.Lock()
	defer started.Unlock()
	if started.pids == nil {
		started.pids = make(map[int]bool)
	}
	started.pids[pid] = true
}

func removeStarted(pid int) {
	started.Lock()
	defer started.Unlock()
	delete(started.pids, pid)
}

// procStat is the part of /proc/PID/stat the tests use.
type procStat struct {
	pid   int
	state byte // R, S, Z, ...
	ppid  int
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return procStat{}, fmt.Errorf("/proc/%d/stat: unexpected %q", pid, b)
	}
	f := bytes.Fields(b[i+2:])
	if len(f) < 2 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: unexpected %q", pid, b)
	}
	ppid, err := strconv.Atoi(string(f[1]))
	if err != nil {
		return procStat{}, err
	}
	return procStat{pid: pid, state: f[0][0], ppid: ppid}, nil
}

// children lists the processes whose parent is ppid, zombies included.
func children(ppid int) []procStat {
	ents, _ := os.ReadDir("/proc")
	var out []procStat
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err == nil && st.ppid == ppid {
			out = append(out, st)
		}
	}
	return out
}

// childPIDs lists the live (not zombie) children of ppid.
func childPIDs(ppid int) []int {
	var pids []int
	for _, st := range children(ppid) {
		if st.state != 'Z' {
			pids = append(pids, st.pid)
		}
	}
	return pids
}

// fdList lists the open file descriptors of pid as "N=TARGET".
func fdList(pid int) []string {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	var fds []string
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		fds = append(fds, e.Name()+"="+target)
	}
	return fds
}

// exitWatch tells when a process, child of ours or not, has exited: a pidfd
// becomes readable then.
type exitWatch struct {
	pid int
	fd  int // -1 when the process was gone already
}

// watchExit opens a pidfd for pid. Open it while the process is known to
// live, so that a reused PID cannot be mistaken for it.
func watchExit(pid int) (*exitWatch, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return &exitWatch{pid: pid, fd: -1}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pidfd_open(%d): %w", pid, err)
	}
	return &exitWatch{pid: pid, fd: fd}, nil
}

// wait waits up to d for the process to exit; it reaps it when it is a child
// of ours. It reports whether the process exited.
func (w *exitWatch) wait(d time.Duration) bool {
	if w.fd >= 0 {
		deadline := time.Now().Add(d)
		for {
			ms := int(time.Until(deadline) / time.Millisecond)
			if ms < 0 {
				ms = 0
			}
			fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, ms)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if n == 0 || err != nil {
				return false
			}
			break
		}
		// Reap it if it was re-parented to us; P_PIDFD names exactly this
		// process, whatever happened to its PID.
		var info unix.Siginfo
		_ = unix.Waitid(unix.P_PIDFD, w.fd, &info, unix.WEXITED|unix.WNOHANG, nil)
	}
	return true
}

func (w *exitWatch) close() {
	if w.fd >= 0 {
		unix.Close(w.fd)
		w.fd = -1
	}
}

// waitExited waits up to d for each of pids (watched beforehand) to exit and
// returns those that did not.
func waitExited(watches []*exitWatch, d time.Duration) []int {
	deadline := time.Now().Add(d)
	var alive []int
	for _, w := range watches {
		if !w.wait(time.Until(deadline)) {
			alive = append(alive, w.pid)
		}
	}
	return alive
}

// reapOrphans kills and reaps the children of ours that os/exec did not
// start: workers of a supervisor that died. It returns their PIDs.
func reapOrphans(bound time.Duration) []int {
	var orphans []*exitWatch
	for _, st := range children(os.Getpid()) {
		started.Lock()
		mine := started.pids[st.pid]
		started.Unlock()
		if mine {
			continue
		}
		w, err := watchExit(st.pid)
		if err != nil {
			continue
		}
		if st.state != 'Z' {
			syscall.Kill(st.pid, syscall.SIGKILL)
		}
		orphans = append(orphans, w)
	}
	var pids []int
	for _, w := range orphans {
		w.wait(bound)
		w.close()
		pids = append(pids, w.pid)
	}
	return pids
}

// reapAll reaps whatever children are left when the tests end.
func reapAll() {
	if pids := reapOrphans(5 * time.Second); len(pids) > 0 {
		fmt.Fprintf(os.Stderr, "reaped leftover processes %v\n", pids)
	}
}
