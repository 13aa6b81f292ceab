package test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

// The helper workers: misbehaving (or introspective) workers that speak the
// worker contract by hand, with no code of ours, as any systemd service would.
var helpers = map[string]func() int{
	// exit fails at once, before anything else.
	"exit": func() int { return 3 },
	// noready starts but never says READY=1 and never accepts.
	"noready": helperNoReady,
	// ignoreterm serves and says READY=1 but ignores the drain signal.
	"ignoreterm": helperIgnoreTerm,
	// fds serves, on the first passed socket, a JSON report of the file
	// descriptors it was started with (see fdReport).
	"fds": helperFDs,
	// crash-on-request serves and says READY=1, then exits 1 on its first
	// request (probation_test.go).
	"crash-on-request": helperCrashOnRequest,
	// hang-on-request serves, says READY=1 and pings the watchdog until its
	// first request, which hangs it (probation_test.go).
	"hang-on-request": helperHangOnRequest,
}

// startFDs is the helper's open file descriptors, taken before it opens any.
var startFDs []fdInfo

func runHelper(name string) int {
	startFDs = openFDs()
	h, ok := helpers[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "helper: no helper %q\n", name)
		return 2
	}
	return h()
}

func helperNoReady() int {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
	return 0
}

func helperIgnoreTerm() int {
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
	ln, err := passedListener(0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper ignoreterm: %v\n", err)
		return 1
	}
	if err := sdNotify("READY=1"); err != nil {
		fmt.Fprintf(os.Stderr, "helper ignoreterm: %v\n", err)
		return 1
	}
	pid := strconv.Itoa(os.Getpid())
	err = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Worker-Pid", pid)
		w.Header().Set("X-Worker-Version", "ignoreterm")
		fmt.Fprintln(w, "ignoring SIGTERM")
	}))
	fmt.Fprintf(os.Stderr, "helper ignoreterm: %v\n", err)
	return 1
}

// fdInfo is one open file descriptor.
type fdInfo struct {
	FD int `json:"fd"`
	// CloseOnExec fds were opened by this process (the Go runtime keeps
	// cgroup files open): an inherited fd cannot have the flag.
	CloseOnExec bool   `json:"cloexec,omitempty"`
	Target      string `json:"target"`         // what /proc/self/fd/N links to
	Addr        string `json:"addr,omitempty"` // the socket's local address
}

// fdReport is what the fds helper answers.
type fdReport struct {
	PID           int      `json:"pid"`
	FDs           []fdInfo `json:"fds"`
	ListenFDs     string   `json:"listen_fds"`
	ListenFDNames string   `json:"listen_fdnames"`
	ListenPID     string   `json:"listen_pid"`
	NotifySocket  string   `json:"notify_socket"`
}

func helperFDs() int {
	report := fdReport{
		PID:           os.Getpid(),
		FDs:           startFDs,
		ListenFDs:     os.Getenv("LISTEN_FDS"),
		ListenFDNames: os.Getenv("LISTEN_FDNAMES"),
		ListenPID:     os.Getenv("LISTEN_PID"),
		NotifySocket:  os.Getenv("NOTIFY_SOCKET"),
	}
	return serveReport("fds", report)
}

// serveReport is a helper worker's whole life after it gathered its report:
// it serves the report as JSON on its first socket (X-Worker-Version names
// the helper), says READY=1, and ends on SIGTERM.
func serveReport(name string, report any) int {
	body, _ := json.Marshal(report)
	ln, err := passedListener(0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", name, err)
		return 1
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Worker-Pid", strconv.Itoa(os.Getpid()))
		w.Header().Set("X-Worker-Version", name)
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})}
	drain := make(chan os.Signal, 1)
	signal.Notify(drain, syscall.SIGTERM)
	go func() {
		<-drain
		srv.Close() // nothing runs under load here
	}()
	if err := sdNotify("READY=1"); err != nil {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", name, err)
		return 1
	}
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", name, err)
		return 1
	}
	return 0
}

// openFDs lists the open file descriptors without opening one itself (and so
// without starting Go's poller, which would open its own).
func openFDs() []fdInfo {
	var rl syscall.Rlimit
	limit := 4096
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Cur < 1<<16 {
		limit = int(rl.Cur)
	}
	var fds []fdInfo
	for fd := 0; fd < limit; fd++ {
		flags, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFD, 0)
		if e != 0 {
			continue
		}
		target, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
		info := fdInfo{FD: fd, Target: target, CloseOnExec: flags&syscall.FD_CLOEXEC != 0}
		if sa, err := syscall.Getsockname(fd); err == nil {
			info.Addr = sockaddrString(sa)
		}
		fds = append(fds, info)
	}
	return fds
}

func sockaddrString(sa syscall.Sockaddr) string {
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return net.JoinHostPort(net.IP(sa.Addr[:]).String(), strconv.Itoa(sa.Port))
	case *syscall.SockaddrInet6:
		return net.JoinHostPort(net.IP(sa.Addr[:]).String(), strconv.Itoa(sa.Port))
	case *syscall.SockaddrUnix:
		return sa.Name
	}
	return fmt.Sprintf("%T", sa)
}

// passedListener is the i-th socket passed by socket activation.
func passedListener(i int) (net.Listener, error) {
	if pid := os.Getenv("LISTEN_PID"); pid != strconv.Itoa(os.Getpid()) {
		return nil, fmt.Errorf("LISTEN_PID=%q, want my pid %d", pid, os.Getpid())
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || i >= n {
		return nil, fmt.Errorf("LISTEN_FDS=%q: no socket %d", os.Getenv("LISTEN_FDS"), i)
	}
	f := os.NewFile(uintptr(3+i), "listener")
	defer f.Close()
	return net.FileListener(f)
}

// sdNotify sends one sd_notify datagram to NOTIFY_SOCKET.
func sdNotify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return fmt.Errorf("no NOTIFY_SOCKET")
	}
	// An abstract socket's leading "@" is spelled the same way in Go.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}
