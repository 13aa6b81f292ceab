package supervisor

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/internal/proc"
	"golang.org/x/sys/unix"
)

// The test binary doubles as the exec shim and as the workers: TestMain
// dispatches on the shim argument and on envHelper.
const (
	envHelper   = "SUPERVISOR_TEST_HELPER"    // set: run as a worker
	envModeFile = "SUPERVISOR_TEST_MODE_FILE" // the file naming the worker's behaviour
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == proc.ShimArg {
		os.Exit(proc.RunShim(os.Args[2:]))
	}
	if os.Getenv(envHelper) != "" {
		os.Exit(runHelper())
	}
	os.Exit(m.Run())
}

// runHelper is a worker whose behaviour the mode file names, read at start,
// so that each upgrade can start a different kind of worker:
//
//	serve        accept on fd 3, answer each connection with our PID, READY=1,
//	             WATCHDOG=1 pings when asked for, exit on the drain signal
//	exit         exit 3 at once
//	never-ready  hold the socket, never accept, never send READY=1
//	ignore-term  serve, but ignore the drain signal
//	hang         serve and send READY=1, but never ping the watchdog
//	slow-ready   serve, READY=1 only after 200ms
//	child-ready  a child process, not the worker, sends READY=1
//	live         runLive: state and connections in the live fd store
//	live-gate    runLive, but a worker started ahead of a handover waits,
//	             before it says WAITING, for EOF on the FIFO <mode file>.gate
func runHelper() int {
	mode, err := os.ReadFile(os.Getenv(envModeFile))
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 2
	}
	if string(mode) == "live" || string(mode) == "live-gate" {
		return runLive(string(mode) == "live-gate")
	}
	if gen, ok := strings.CutPrefix(string(mode), "counter"); ok {
		return runCounter(gen)
	}
	switch string(mode) {
	case "blocking":
		return blockingAccept()
	case "with-child":
		if err := startOrphanCandidate(); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 2
		}
	case "exit":
		return 3
	case "never-ready":
		select {}
	case "child-ready":
		return childReady()
	case "notify-only":
		sendNotify("READY=1")
		return 0
	}
	ln, err := net.FileListener(os.NewFile(3, "listen0"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 2
	}
	go acceptLoop(ln)
	drain := make(chan os.Signal, 1)
	if string(mode) == "ignore-term" {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(drain, syscall.SIGTERM)
	}
	if string(mode) == "slow-ready" {
		time.Sleep(200 * time.Millisecond)
	}
	sendNotify("READY=1")
	if usec, _ := strconv.Atoi(os.Getenv("WATCHDOG_USEC")); usec > 0 && string(mode) != "hang" {
		go func() {
			for range time.Tick(time.Duration(usec) * time.Microsecond / 4) {
				sendNotify("WATCHDOG=1")
			}
		}()
	}
	<-drain
	ln.Close()
	return 0
}

func acceptLoop(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		fmt.Fprintf(c, "%d\n", os.Getpid())
		c.Close()
	}
}

func sendNotify(msg string) {
	c, err := net.Dial("unixgram", os.Getenv("NOTIFY_SOCKET"))
	if err != nil {
		return
	}
	defer c.Close()
	c.Write([]byte(msg))
}

// childReady starts a child that sends READY=1 for us: the supervisor must
// not believe it, since the kernel says it came from another PID.
func childReady() int {
	modeFile := filepath.Join(os.TempDir(), fmt.Sprintf("child-ready-%d", os.Getpid()))
	os.WriteFile(modeFile, []byte("notify-only"), 0o600)
	defer os.Remove(modeFile)
	p, err := os.StartProcess(os.Args[0], []string{os.Args[0]}, &os.ProcAttr{
		Env:   append(os.Environ(), envModeFile+"="+modeFile),
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
	})
	if err != nil {
		return 2
	}
	p.Wait()
	select {}
}

// blockingAccept serves as a program written for systemd in C or Python
// would: accept(2) on fd 3, expecting it to block.
func blockingAccept() int {
	sendNotify("READY=1")
	for {
		nfd, _, err := unix.Accept(3)
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper: accept:", err)
			return 5
		}
		unix.Write(nfd, []byte(strconv.Itoa(os.Getpid())+"\n"))
		unix.Close(nfd)
	}
}

// startOrphanCandidate starts a child that would outlive the worker, and
// writes its PID next to the mode file.
func startOrphanCandidate() error {
	modeFile := os.Getenv(envModeFile) + ".child"
	if err := os.WriteFile(modeFile, []byte("never-ready"), 0o600); err != nil {
		return err
	}
	p, err := os.StartProcess(os.Args[0], []string{os.Args[0]}, &os.ProcAttr{
		Env:   append(os.Environ(), envModeFile+"="+modeFile),
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
	})
	if err != nil {
		return err
	}
	return os.WriteFile(os.Getenv(envModeFile)+".childpid", []byte(strconv.Itoa(p.Pid)), 0o600)
}
