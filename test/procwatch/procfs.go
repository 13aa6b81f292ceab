package procwatch

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Stat is the part of /proc/PID/stat that procwatch reads.
type Stat struct {
	PID   int
	State byte // R, S, D, Z, ...
	PPID  int
}

// statFields returns the fields of /proc/PID/stat from the third, the
// state, on.
func statFields(pid int) ([][]byte, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return nil, fmt.Errorf("/proc/%d/stat: unexpected %q", pid, b)
	}
	f := bytes.Fields(b[i+2:])
	if len(f) < 2 {
		return nil, fmt.Errorf("/proc/%d/stat: unexpected %q", pid, b)
	}
	return f, nil
}

// ReadStat reads pid's state and parent.
func ReadStat(pid int) (Stat, error) {
	f, err := statFields(pid)
	if err != nil {
		return Stat{}, err
	}
	ppid, err := strconv.Atoi(string(f[1]))
	if err != nil {
		return Stat{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return Stat{PID: pid, State: f[0][0], PPID: ppid}, nil
}

// Children lists the processes whose parent is ppid, zombies included.
func Children(ppid int) []Stat {
	ents, _ := os.ReadDir("/proc")
	var out []Stat
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := ReadStat(pid); err == nil && st.PPID == ppid {
			out = append(out, st)
		}
	}
	return out
}

// ChildPIDs lists the live (not zombie) children of ppid.
func ChildPIDs(ppid int) []int {
	var pids []int
	for _, st := range Children(ppid) {
		if st.State != 'Z' {
			pids = append(pids, st.PID)
		}
	}
	return pids
}

// FDs lists the open file descriptors of pid as "N=TARGET".
func FDs(pid int) []string {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	var fds []string
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		fds = append(fds, e.Name()+"="+target)
	}
	return fds
}

// Usage is what /proc says about a process at one moment.
type Usage struct {
	RSSKB    int   `json:"rss_kb"`     // VmRSS
	HWMKB    int   `json:"hwm_kb"`     // VmHWM, the peak RSS so far
	Threads  int   `json:"threads"`    // Threads
	FDs      int   `json:"fds"`        // entries of /proc/PID/fd
	Children int   `json:"children"`   // live child processes
	Zombies  int   `json:"zombies"`    // children that exited and were not reaped
	ChildPID []int `json:"child_pids"` // the live children
}

// ReadUsage reads pid's memory, threads, fds and children.
func ReadUsage(pid int) (Usage, error) {
	var u Usage
	st, err := ReadStatus(pid)
	if err != nil {
		return u, err
	}
	u.RSSKB, u.HWMKB, u.Threads = st["VmRSS"], st["VmHWM"], st["Threads"]
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return u, err
	}
	u.FDs = len(fds)
	for _, c := range Children(pid) {
		if c.State == 'Z' {
			u.Zombies++
		} else {
			u.Children++
			u.ChildPID = append(u.ChildPID, c.PID)
		}
	}
	return u, nil
}

// ReadStatus returns the numeric fields of /proc/PID/status, in kB for the
// memory ones.
func ReadStatus(pid int) (map[string]int, error) {
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
		if f := strings.Fields(v); len(f) > 0 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				m[k] = n
			}
		}
	}
	return m, nil
}

// clockTick is the unit of utime and stime in /proc/PID/stat: USER_HZ, 100
// on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// CPUTime is the CPU time, user and system, that pids have used so far.
func CPUTime(pids ...int) (time.Duration, error) {
	var total time.Duration
	for _, pid := range pids {
		f, err := statFields(pid)
		if err != nil {
			return 0, err
		}
		if len(f) < 13 {
			return 0, fmt.Errorf("/proc/%d/stat: only %d fields", pid, len(f)+2)
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

// SchedTime is the CPU time pids have run so far, by the scheduler's own
// account (the first field of /proc/PID/task/*/schedstat, in nanoseconds):
// finer than CPUTime's clock ticks, for spans of a few milliseconds.
func SchedTime(pids ...int) (time.Duration, error) {
	var total time.Duration
	for _, pid := range pids {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			return 0, err
		}
		for _, t := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
			if err != nil {
				continue // the thread has exited
			}
			f := strings.Fields(string(b))
			if len(f) == 0 {
				continue
			}
			ns, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/task/%s/schedstat: %w", pid, t.Name(), err)
			}
			total += time.Duration(ns)
		}
	}
	return total, nil
}

// LoadAvg is /proc/loadavg's 1, 5 and 15 minute figures, "?" if it cannot
// be read: the benchmarks print it beside every figure, since the machine
// is shared.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "?"
}
