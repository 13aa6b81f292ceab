package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// usage is what /proc says about a process at one moment.
type usage struct {
	RSSKB    int   `json:"rss_kb"`     // VmRSS
	HWMKB    int   `json:"hwm_kb"`     // VmHWM, the peak RSS so far
	Threads  int   `json:"threads"`    // Threads
	FDs      int   `json:"fds"`        // entries of /proc/PID/fd
	Children int   `json:"children"`   // live child processes
	Zombies  int   `json:"zombies"`    // children that exited and were not reaped
	ChildPID []int `json:"child_pids"` // the live children
}

// readUsage reads pid's memory, threads, fds and children.
func readUsage(pid int) (usage, error) {
	var u usage
	st, err := readStatus(pid)
	if err != nil {
		return u, err
	}
	u.RSSKB, u.HWMKB, u.Threads = st["VmRSS"], st["VmHWM"], st["Threads"]
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return u, err
	}
	u.FDs = len(fds)
	for _, c := range children(pid) {
		if c.state == 'Z' {
			u.Zombies++
		} else {
			u.Children++
			u.ChildPID = append(u.ChildPID, c.pid)
		}
	}
	return u, nil
}

// readStatus returns the numeric fields of /proc/PID/status, in kB for the
// memory ones.
func readStatus(pid int) (map[string]int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	m := make(map[string]int)
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		if n, err := strconv.Atoi(f[0]); err == nil {
			m[k] = n
		}
	}
	return m, nil
}

// procStat is the part of /proc/PID/stat we use.
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
		if st, err := readStat(pid); err == nil && st.ppid == ppid {
			out = append(out, st)
		}
	}
	return out
}

// becomeSubreaper makes the workers of a supervisor that dies our children,
// so that reapOrphans can stop and reap them (PID 1 here may not), and
// marks every inherited fd close-on-exec, so that the supervisor starts with
// stdio only and its fd count is its own.
func becomeSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", err)
	}
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("close_range: %w", err)
	}
	return nil
}

// reapOrphans kills and reaps our children that os/exec is not waiting for:
// workers re-parented to us when their supervisor died. Only processes
// running one of the binaries we built (in binDir) are killed; others are
// reported. It returns the PIDs it reaped.
func reapOrphans(binDir string, bound time.Duration) []int {
	var reaped []int
	for _, st := range children(os.Getpid()) {
		running.Lock()
		_, mine := running.procs[st.pid]
		running.Unlock()
		if mine {
			continue
		}
		if st.state != 'Z' {
			exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", st.pid))
			if binDir == "" || !strings.HasPrefix(exe, binDir+string(filepath.Separator)) {
				warnf("child process %d (%s) is not one we started; left alone", st.pid, exe)
				continue
			}
			syscall.Kill(st.pid, syscall.SIGKILL)
		}
		if waitPID(st.pid, bound) {
			reaped = append(reaped, st.pid)
		}
	}
	return reaped
}

// waitPID reaps the child pid, polling for at most bound.
func waitPID(pid int, bound time.Duration) bool {
	deadline := time.Now().Add(bound)
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		if got == pid || errors.Is(err, syscall.ECHILD) {
			return got == pid
		}
		if time.Now().After(deadline) {
			warnf("process %d not reaped within %v", pid, bound)
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// machine describes where the benchmark ran.
type machine struct {
	NumCPU     int    `json:"nproc"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	CPU        string `json:"cpu"`
	Kernel     string `json:"kernel"`
	Go         string `json:"go"`
	LoadStart  string `json:"loadavg_start"`
	LoadEnd    string `json:"loadavg_end,omitempty"`
	Started    string `json:"started"`
}

func describeMachine() machine {
	m := machine{NumCPU: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), Go: runtime.Version(),
		LoadStart: loadavg(), Started: time.Now().UTC().Format(time.RFC3339)}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = fmt.Sprintf("%s %s %s", unix.ByteSliceToString(u.Sysname[:]),
			unix.ByteSliceToString(u.Release[:]), unix.ByteSliceToString(u.Machine[:]))
	}
	if out, err := exec.Command(goTool(), "version").Output(); err == nil {
		m.Go = strings.TrimSpace(string(out))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// loadavg is the first three fields of /proc/loadavg.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// clockTick is the unit of utime and stime in /proc/PID/stat: USER_HZ, 100
// on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// cpuTime is the CPU time (user and system) that pids have used so far.
func cpuTime(pids ...int) (time.Duration, error) {
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, err
		}
		i := bytes.LastIndexByte(b, ')')
		f := bytes.Fields(b[i+2:]) // from field 3, state, on
		if i < 0 || len(f) < 13 {
			return 0, fmt.Errorf("/proc/%d/stat: unexpected %q", pid, b)
		}
		for _, s := range f[11:13] { // fields 14 and 15: utime, stime
			n, err := strconv.ParseInt(string(s), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
			}
			total += time.Duration(n) * clockTick
		}
	}
	return total, nil
}
