package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/procswitch/supervisor/internal/earlysig"
	"github.com/procswitch/supervisor/internal/history"
	"github.com/procswitch/supervisor/internal/proc"
	"github.com/procswitch/supervisor/internal/sdnotify"
	"github.com/procswitch/supervisor/internal/supervisor"
	"github.com/procswitch/supervisor/listener"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// The self-upgrade by re-exec in place (--self-upgrade exec; the engine's
// side is internal/supervisor/reexec.go): on SIGUSR2 the new binary, at
// the path this supervisor was started from, is first run in check mode
// (reexecCheckArg) with this command line, and must answer that it reads
// this image layout; then the engine quiesces and this process execs it
// with the state in a memfd named by envReexecImage. Same PID, same
// workers, same sockets: as PID 1 of a container, the container lives on;
// under systemd, MainPID does not change.

// reexecCheckArg runs the binary in check mode: `supervisor reexec-check
// FLAGS... -- WORKER...` parses the command line as a start would and
// prints reexecCheckAnswer with the image layout it reads.
const reexecCheckArg = "reexec-check"

const reexecCheckAnswer = "supervisor reexec image "

// envReexecImage names the fd of the image's memfd in the new image.
const envReexecImage = "SUPERVISOR_REEXEC_IMAGE"

// reexecCheckTimeout bounds the check run.
const reexecCheckTimeout = 10 * time.Second

// reexecImage is the whole state across the exec: the engine's and what
// this package holds.
type reexecImage struct {
	RuntimeDir string            `json:"runtime_dir"` // the notify sockets' directory, kept
	Sockets    []reexecSocket    `json:"sockets"`
	Control    int               `json:"control"` // fd of the control socket's listener; -1 for none
	Metrics    int               `json:"metrics"` // fd of --metrics-listen's; -1 for none
	Engine     *supervisor.Image `json:"engine"`
}

type reexecSocket struct {
	Name     string `json:"name"`
	FD       int    `json:"fd"`
	OwnsPath bool   `json:"owns_path"`
}

// runReexecCheck is check mode: it exits 0 and says which image layout it
// reads when the command line would start.
func runReexecCheck(args []string) int {
	if _, err := parseFlags(args, io.Discard); err != nil {
		fmt.Fprintf(os.Stderr, "supervisor: %v\n", err)
		return 2
	}
	fmt.Println(reexecCheckAnswer + strconv.Itoa(supervisor.ImageVersion))
	return 0
}

// checkNewBinary runs the new binary, found at path and executed as file
// (its /proc/self/fd path), in check mode with our command line: a build
// that does not run, or reads another image, or refuses the flags is
// refused before anything is touched.
func checkNewBinary(path, file string) error {
	ctx, cancel := context.WithTimeout(context.Background(), reexecCheckTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, file, append([]string{reexecCheckArg}, os.Args[1:]...)...)
	cmd.Args[0] = path
	cmd.Env = cleanReexecEnv(os.Environ())
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	want := reexecCheckAnswer + strconv.Itoa(supervisor.ImageVersion)
	switch {
	case err != nil:
		msg := err.Error()
		if ee, ok := err.(*exec.ExitError); ok && len(ee.Stderr) > 0 {
			msg += ": " + strings.TrimSpace(string(ee.Stderr))
		}
		return fmt.Errorf("the new binary %s failed its check (%s %s ...): %s", path, path, reexecCheckArg, msg)
	case strings.TrimSpace(string(out)) != want:
		return fmt.Errorf("the new binary %s answered its check with %q, want %q: it cannot take this supervisor's state over", path, strings.TrimSpace(string(out)), want)
	}
	return nil
}

// reexecer execs the new image: the engine's Config.Reexec.
type reexecer struct {
	path       string      // this supervisor's binary, as started: a new build installed there is what runs
	binary     string      // the checked file to execute (a /proc/self/fd path); path when empty
	stopped    func() bool // a stop signal came: no exec, which would lose it
	runtimeDir string
	sockets    *listener.Set
	ctl        func() *net.UnixListener // nil without a control socket
	obs        *observability
	sd         *sdnotify.Notifier
	hist       *history.Log // nil without one
	log        zerolog.Logger
}

// historyFlushBound bounds the wait for the history's queued records before
// the exec, which ends their writer.
const historyFlushBound = 2 * time.Second

func (r *reexecer) exec(img *supervisor.Image) error {
	ri := reexecImage{Control: -1, Metrics: -1, Engine: img, RuntimeDir: r.runtimeDir}
	for _, s := range r.sockets.Sockets {
		ri.Sockets = append(ri.Sockets, reexecSocket{Name: s.Name, FD: s.FD(), OwnsPath: s.OwnsPath})
	}
	if r.ctl != nil {
		ri.Control = listenerFD(r.ctl())
	}
	if ln, ok := r.obs.ln.(*net.TCPListener); ok {
		ri.Metrics = listenerFD(ln)
	}
	fds := ri.fds()
	b, err := json.Marshal(ri)
	if err != nil {
		return err
	}
	mfd, err := unix.MemfdCreate("supervisor-reexec-image", unix.MFD_CLOEXEC|unix.MFD_NOEXEC_SEAL)
	if errors.Is(err, unix.EINVAL) { // a kernel before 6.3
		mfd, err = unix.MemfdCreate("supervisor-reexec-image", unix.MFD_CLOEXEC)
	}
	if err != nil {
		return fmt.Errorf("memfd: %w", err)
	}
	defer unix.Close(mfd)
	if _, err := unix.Pwrite(mfd, b, 0); err != nil {
		return fmt.Errorf("writing the image: %w", err)
	}
	fds = append(fds, mfd)
	if r.hist != nil && !r.hist.Flush(historyFlushBound) {
		r.log.Warn().Dur("bound", historyFlushBound).Msg("re-exec: the upgrade history's last records were not written in time: they may be lost")
	}
	env := append(cleanReexecEnv(os.Environ()), envReexecImage+"="+strconv.Itoa(mfd))
	// This very binary, whatever is at the path now, for the new image to
	// execute again if it cannot take the state over (O_PATH: execute
	// permission is enough).
	if self, err := unix.Open("/proc/self/exe", unix.O_PATH|unix.O_CLOEXEC, 0); err == nil {
		defer unix.Close(self) // if the exec fails
		fds = append(fds, self)
		env = append(env, envReexecFallback+"="+strconv.Itoa(self))
	} else {
		r.log.Warn().Err(err).Msg("re-exec: no fallback to this binary if the new one cannot take the state over")
	}
	file := r.binary
	if file == "" {
		file = r.path
	}
	r.sd.Send(sdnotify.Reloading()...)
	// On the main thread, from the fds' losing close-on-exec to the exec,
	// with no fork meanwhile (ForkLock), so that nothing else inherits them.
	err = proc.ExecPrepared(func() error {
		syscall.ForkLock.Lock()
		for _, fd := range fds {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
				return fmt.Errorf("keeping fd %d open across the exec: %w", fd, err)
			}
		}
		if r.stopped != nil && r.stopped() {
			return errors.New("a stop was asked for meanwhile: no exec, the stop goes on here")
		}
		return nil
	}, func() {
		setCloexec(fds)
		syscall.ForkLock.Unlock()
	}, file, os.Args, env)
	r.sd.Send("READY=1")
	return err
}

func setCloexec(fds []int) {
	for _, fd := range fds {
		unix.CloseOnExec(fd)
	}
}

// listenerFD is the fd under a listener, or -1.
func listenerFD(ln syscall.Conn) int {
	fd := -1
	if rc, err := ln.SyscallConn(); err == nil {
		rc.Control(func(f uintptr) { fd = int(f) })
	}
	return fd
}

// envReexecFallback names, in the new image, an fd of the previous image's
// own binary: a new image that cannot take the state over (preflight)
// executes it again, with the same image, rather than die with the workers.
const envReexecFallback = "SUPERVISOR_REEXEC_FALLBACK"

// envReexecFellBack, set by a new image for the previous binary it executes
// again (fallBack), says why: the previous binary serves on, and records the
// self-upgrade as failed.
const envReexecFellBack = "SUPERVISOR_REEXEC_FELL_BACK"

// pendingImage is the image a previous image of this process left, read
// and checked (preflight) but not yet taken over: until take, a failure of
// this image's start executes the previous binary again (fallBack).
type pendingImage struct {
	ri       reexecImage
	mfd      int
	fallback string // the previous binary's fd, as passed; "" for none
	fellBack string // this image is that previous binary, and why
}

// readReexecImage reads and checks the image a previous image of this
// process left, if it re-executed itself; nil if it did not. A failure
// falls back (and returns only if that fails).
func readReexecImage(opts *options, log zerolog.Logger) (*pendingImage, error) {
	v := os.Getenv(envReexecImage)
	if v == "" {
		return nil, nil
	}
	redeliverSignals()
	p := &pendingImage{fallback: os.Getenv(envReexecFallback), fellBack: os.Getenv(envReexecFellBack)}
	os.Unsetenv(envReexecImage)
	os.Unsetenv(envReexecFallback)
	os.Unsetenv(envReexecFellBack)
	var err error
	if p.mfd, err = strconv.Atoi(v); err != nil || p.mfd < 3 {
		return nil, fmt.Errorf("re-exec: %s=%q is not an fd", envReexecImage, v)
	}
	var st unix.Stat_t
	var b []byte
	if err = unix.Fstat(p.mfd, &st); err == nil {
		b = make([]byte, st.Size)
		var n int
		n, err = unix.Pread(p.mfd, b, 0) // by offset: a fallback reads it again
		b = b[:max(n, 0)]
	}
	if err != nil {
		return nil, p.fallBack(fmt.Errorf("re-exec: reading the image: %w", err), log)
	}
	if err := json.Unmarshal(b, &p.ri); err != nil || p.ri.Engine == nil {
		return nil, p.fallBack(fmt.Errorf("re-exec: the image the previous binary left is not one this binary reads (%v): was it another program?", err), log)
	}
	if err := p.ri.preflight(opts); err != nil {
		return nil, p.fallBack(fmt.Errorf("re-exec: this binary cannot take the state over: %w", err), log)
	}
	return p, nil
}

// take takes the image's fds over, as an inheritance; no fallback after it.
func (p *pendingImage) take() *inheritance {
	if fd, err := strconv.Atoi(p.fallback); err == nil {
		unix.Close(fd)
	}
	unix.Close(p.mfd)
	ri := &p.ri
	ri.Engine.FellBack = p.fellBack
	in := &inheritance{reexec: ri.Engine, lastGen: ri.Engine.LastGen, runtimeDir: ri.RuntimeDir}
	for _, s := range ri.Sockets {
		unix.CloseOnExec(s.FD)
		in.sockets = append(in.sockets, listener.Passed{Name: s.Name, File: os.NewFile(uintptr(s.FD), s.Name), OwnsPath: s.OwnsPath})
	}
	if ri.Control >= 0 {
		if ln, err := fileListener(ri.Control); err == nil {
			in.control, _ = ln.(*net.UnixListener)
		}
	}
	if ri.Metrics >= 0 {
		if ln, err := fileListener(ri.Metrics); err == nil {
			in.metrics = ln
		}
	}
	return in
}

// fds are every fd the image names.
func (ri *reexecImage) fds() []int {
	fds := ri.Engine.FDs()
	for _, s := range ri.Sockets {
		fds = append(fds, s.FD)
	}
	for _, fd := range []int{ri.Control, ri.Metrics} {
		if fd >= 0 {
			fds = append(fds, fd)
		}
	}
	return fds
}

// preflight checks, before anything is taken over, what would make this
// image fail to serve with the state: the layout, the workers, every fd,
// the runtime directory.
func (ri *reexecImage) preflight(opts *options) error {
	switch {
	case failReexecPreflight:
		return errors.New("a build that fails its preflight, for the tests")
	case ri.Engine.Version != supervisor.ImageVersion:
		return fmt.Errorf("the image's layout is %d, this binary reads %d", ri.Engine.Version, supervisor.ImageVersion)
	case len(ri.Engine.Gen.Workers) != opts.workers:
		return fmt.Errorf("the image has %d workers, --workers says %d", len(ri.Engine.Gen.Workers), opts.workers)
	}
	for _, fd := range ri.fds() {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			return fmt.Errorf("fd %d of the image: %w", fd, err)
		}
	}
	kind := func(fd int, want uint32, what string) error {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != want {
			return fmt.Errorf("fd %d of the image is not %s", fd, what)
		}
		return nil
	}
	socks := []int{ri.Engine.Gen.NotifyFD, ri.Control, ri.Metrics}
	for _, s := range ri.Sockets {
		socks = append(socks, s.FD)
	}
	for _, fd := range socks {
		if fd >= 0 {
			if err := kind(fd, unix.S_IFSOCK, "a socket"); err != nil {
				return err
			}
		}
	}
	exes := []int{ri.Engine.Gen.ExeFD}
	for _, h := range ri.Engine.Held {
		exes = append(exes, h.FD)
	}
	for _, fd := range exes {
		if fd >= 0 {
			if err := kind(fd, unix.S_IFREG, "a held binary"); err != nil {
				return err
			}
		}
	}
	if ri.RuntimeDir != "" {
		if _, err := os.Stat(ri.RuntimeDir); err != nil {
			return fmt.Errorf("the runtime directory: %w", err)
		}
	}
	return nil
}

// fallBack executes the previous binary (the fd the previous image
// passed) again with the image, on the main thread, which forked the
// workers, telling it why; it returns why, and why that failed too, if it
// cannot. The image's fds are still as the previous image left them, open
// across an exec. Nil p: nothing to fall back to.
func (p *pendingImage) fallBack(why error, log zerolog.Logger) error {
	if p == nil {
		return why
	}
	fd, err := strconv.Atoi(p.fallback)
	if err != nil {
		return why
	}
	log.Error().Err(why).Msg("re-exec in place: executing the previous binary again with the state")
	unix.FcntlInt(uintptr(p.mfd), unix.F_SETFD, 0)
	unix.CloseOnExec(fd)                                                                // executed by path; the kernel has the file before it closes the fd
	env := append(cleanReexecEnv(os.Environ()), envReexecImage+"="+strconv.Itoa(p.mfd), // no fallback: no loop
		envReexecFellBack+"="+strings.ReplaceAll(why.Error(), "\n", " "))
	if pending := pendingSignals(); pending != "" {
		env = append(env, envReexecSignals+"="+pending) // caught meanwhile: the previous binary handles them
	}
	err = proc.Exec("/proc/self/fd/"+strconv.Itoa(fd), os.Args, env)
	return fmt.Errorf("%w; and executing the previous binary again failed: %v", why, err)
}

// envReexecSignals carries, to the previous binary that a fallback executes
// again, the signals this image caught before it gave up: a stop asked for
// meanwhile is not lost.
const envReexecSignals = "SUPERVISOR_REEXEC_SIGNALS"

// pendingSignals takes the signals caught so far, as numbers.
func pendingSignals() string {
	var nums []string
	for {
		select {
		case sig := <-earlysig.C:
			if s, ok := sig.(syscall.Signal); ok {
				nums = append(nums, strconv.Itoa(int(s)))
			}
		default:
			return strings.Join(nums, ",")
		}
	}
}

// redeliverSignals hands the signals a fallen-back image caught (above) to
// this one.
func redeliverSignals() {
	v := os.Getenv(envReexecSignals)
	os.Unsetenv(envReexecSignals)
	for _, f := range strings.Split(v, ",") {
		if n, err := strconv.Atoi(f); err == nil {
			select {
			case earlysig.C <- syscall.Signal(n):
			default:
			}
		}
	}
}

// fileListener takes over the listener at fd (its duplicate; fd is closed).
func fileListener(fd int) (net.Listener, error) {
	f := os.NewFile(uintptr(fd), "listener")
	defer f.Close()
	return net.FileListener(f)
}

// cleanReexecEnv drops what the new image must not take for its own:
// systemd's sockets (it gets ours in the image) and a previous image's.
func cleanReexecEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", envReexecImage, envReexecFallback, envReexecFellBack, envReexecSignals:
			continue
		}
		out = append(out, kv)
	}
	return out
}
