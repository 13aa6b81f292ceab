package container_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/test/procwatch"
)

// Bounds of the waits on a container.
const (
	startBound   = 30 * time.Second // nspawn's start to the first generation ready
	upgradeBound = 60 * time.Second // SIGHUP to the upgrade's outcome (the image's --ready-timeout is 30s)
	execBound    = 90 * time.Second // a command run inside the container
	killBound    = 10 * time.Second // SIGKILL to the exit
)

// cgroupRoots are the hierarchies in which each container gets a cgroup of
// its own, as test/systemd/systemd-container.sh does: nspawn --keep-unit
// makes its payload and supervisor cgroups below its own, which would
// otherwise be the root (on a host whose PID 1 is not systemd), shared by
// every container, or the test's, shared with the test. The hybrid
// layout's two hierarchies where they exist, else the unified one.
func cgroupRoots() []string {
	var roots []string
	for _, r := range []string{"/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"} {
		if _, err := os.Stat(r); err == nil {
			roots = append(roots, r)
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil && len(roots) == 0 {
		roots = append(roots, "/sys/fs/cgroup")
	}
	return roots
}

// machines numbers the containers of this process, for their names.
var machines atomic.Int32

// container is the image's root filesystem run by systemd-nspawn, its
// command line as PID 1. Its output is the supervisor's (--console=pipe).
type container struct {
	*procwatch.Supervisor          // its log; its Proc is nspawn
	name                  string   // the machine name (the container's hostname)
	fs                    rootfs   // its root filesystem and volume
	pid1                  int      // the host PID of the container's PID 1, the supervisor
	env                   []string // the image's ENV
	cgroups               []string
}

// startContainer runs the image's command line (testCommand) as PID 1 of a
// new container and waits until its first generation is ready. The test's
// cleanup stops it if the test did not.
func startContainer(t *testing.T, im *image) *container {
	t.Helper()
	nspawn := needTool(t, "systemd-nspawn", "systemd-container")
	c := &container{
		name: fmt.Sprintf("procswitch-ctr-%d-%d", os.Getpid(), machines.Add(1)),
		fs:   im.rootfs(t),
		env:  im.file.env,
	}
	t.Cleanup(c.cleanUp)
	for _, root := range cgroupRoots() {
		cg := filepath.Join(root, c.name)
		if err := os.Mkdir(cg, 0o755); err != nil {
			t.Fatal(err)
		}
		c.cgroups = append(c.cgroups, cg)
	}
	args := []string{
		"--quiet",
		"--register=no", "--keep-unit", // no machined, no unit of our own: there may be no systemd on the host
		"--machine=" + c.name,
		"--directory=" + c.fs.dir,
		"--bind=" + c.fs.volume + ":" + c.fs.mount,
		"--console=pipe",          // the payload's stdio are ours, pipes as under a container runtime
		"--kill-signal=SIGTERM",   // nspawn's own SIGTERM becomes PID 1's, as a runtime stops a container
		"--setenv=NOTIFY_SOCKET=", // nspawn's notify socket would make the supervisor report to it, as under systemd
	}
	for _, kv := range c.env {
		args = append(args, "--setenv="+kv)
	}
	args = append(append(args, "--"), im.testCommand(t)...)
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), helperEnv+"=cgexec", cgexecPathEnv+"="+nspawn,
		cgexecGroupsEnv+"="+strings.Join(c.cgroups, ":"))
	p, err := procwatch.Start("container "+c.name, cmd)
	if err != nil {
		t.Fatal(err)
	}
	c.Supervisor = &procwatch.Supervisor{Proc: p}
	t.Logf("systemd-nspawn %s", strings.Join(args, " "))
	// The supervisor says it runs as PID 1: only then is nspawn's child
	// the container's PID 1 (before, it may be nspawn's own helper).
	if _, _, err := c.Find(0, startBound, "supervisor started as PID 1", func(e procwatch.Entry) bool {
		return e.Is("supervisor started", "pid") && e.Int("pid") == 1
	}); err != nil {
		t.Fatal(err)
	}
	c.pid1 = c.findPID1(t)
	if _, err := c.WaitReady(1, startBound); err != nil {
		t.Fatal(err)
	}
	return c
}

// findPID1 returns the host PID of the container's PID 1: nspawn's only
// child, whose PID is 1 in its own PID namespace.
func (c *container) findPID1(t *testing.T) int {
	t.Helper()
	kids := procwatch.ChildPIDs(c.PID)
	if len(kids) != 1 {
		t.Fatalf("nspawn (pid %d) has children %v, want one: the container's PID 1", c.PID, kids)
	}
	pid := kids[0]
	if ns := nsPID(pid); ns != 1 {
		t.Fatalf("nspawn's child %d is PID %d in its namespace, want 1", pid, ns)
	}
	return pid
}

// signal sends sig to the container's PID 1, from the host, as a container
// runtime does (runc kill, kubelet's stop).
func (c *container) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if c.Exited() {
		t.Fatalf("container %s has exited: %v\n%s", c.name, c.Err(), c.Log.Tail(20))
	}
	if err := syscall.Kill(c.pid1, sig); err != nil {
		t.Fatalf("kill(%d, %v): %v", c.pid1, sig, err)
	}
}

// exec runs argv inside the container, in all its namespaces, with the
// image's ENV and nothing else: as `kubectl exec POD -- ARGV` does.
func (c *container) exec(t *testing.T, argv ...string) (string, error) {
	t.Helper()
	nsenter := needTool(t, "nsenter", "util-linux")
	ctx, cancel := context.WithTimeout(context.Background(), execBound)
	defer cancel()
	cmd := exec.CommandContext(ctx, nsenter, append([]string{"-t", fmt.Sprint(c.pid1), "-a", "--"}, argv...)...)
	cmd.Env = c.env // nsenter passes its environment on
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := procwatch.Run(cmd)
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (bound %v)", ctx.Err(), execBound)
	}
	return out.String(), err
}

// waitExit waits up to d for the container to end, and returns how it
// ended: nil for exit status 0.
func (c *container) waitExit(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-c.Done():
		return c.Err()
	case <-time.After(d):
		t.Fatalf("container %s still runs %v after it was told to stop\n%s", c.name, d, c.Log.Tail(20))
		return nil
	}
}

// cleanUp stops the container if it still runs (SIGTERM to PID 1 through
// nspawn, then SIGKILL to both), and removes its cgroups and what nspawn
// leaves in /run.
func (c *container) cleanUp() {
	if c.Supervisor != nil && !c.Exited() {
		if err := c.Stop(startBound); err != nil && c.pid1 > 0 {
			syscall.Kill(c.pid1, syscall.SIGKILL)
			c.wait(killBound)
		}
	}
	for _, cg := range c.cgroups {
		removeCgroup(cg)
	}
	os.Remove(filepath.Join("/run/systemd/nspawn/propagate", c.name))
}

func (c *container) wait(d time.Duration) {
	select {
	case <-c.Done():
	case <-time.After(d):
	}
}

// removeCgroup removes a cgroup and the ones below it, deepest first; they
// are empty once nspawn has exited.
func removeCgroup(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() {
			removeCgroup(filepath.Join(dir, e.Name()))
		}
	}
	os.Remove(dir)
}

// nsPID is pid's PID in its own (innermost) PID namespace, from the NSpid
// line of /proc/PID/status; 0 when it cannot be read.
func nsPID(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(rest)
			var n int
			fmt.Sscan(f[len(f)-1], &n)
			return n
		}
	}
	return 0
}

// descendants lists the processes below pid, zombies included, parents
// before their children.
func descendants(pid int) []procwatch.Stat {
	var out []procwatch.Stat
	for _, st := range procwatch.Children(pid) {
		out = append(out, st)
		out = append(out, descendants(st.PID)...)
	}
	return out
}

// procs formats processes for messages: host PID, state, parent.
func procs(sts []procwatch.Stat) string {
	var b strings.Builder
	for i, st := range sts {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d (%c, parent %d)", st.PID, st.State, st.PPID)
	}
	return "[" + b.String() + "]"
}

// zombies lists the processes below pid that have exited and not been
// reaped.
func zombies(pid int) []procwatch.Stat {
	var zs []procwatch.Stat
	for _, st := range descendants(pid) {
		if st.State == 'Z' {
			zs = append(zs, st)
		}
	}
	return zs
}

// The cgexec helper's environment.
const (
	cgexecPathEnv   = "PROCSWITCH_CGEXEC_PATH"   // the program to exec
	cgexecGroupsEnv = "PROCSWITCH_CGEXEC_GROUPS" // cgroup directories, joined by ':'
)

// helperCgexec moves itself into the cgroups named, then execs the
// program, keeping its PID: so nspawn starts in its container's own cgroups.
func helperCgexec() error {
	path := os.Getenv(cgexecPathEnv)
	groups := os.Getenv(cgexecGroupsEnv)
	if path == "" {
		return errors.New(cgexecPathEnv + " is not set")
	}
	for _, cg := range strings.Split(groups, ":") {
		if cg == "" {
			continue
		}
		if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(fmt.Sprint(os.Getpid())), 0o644); err != nil {
			return err
		}
	}
	env := make([]string, 0, len(os.Environ()))
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, helperEnv+"=") && !strings.HasPrefix(kv, "PROCSWITCH_CGEXEC_") {
			env = append(env, kv)
		}
	}
	return syscall.Exec(path, append([]string{path}, os.Args[1:]...), env)
}
