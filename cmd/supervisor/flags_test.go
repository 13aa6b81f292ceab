package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseFlagsRejectsBadInputWithOneClearLine(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	notExec := filepath.Join(t.TempDir(), "worker")
	os.WriteFile(notExec, []byte("x"), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bogus", "--", exe}, "flag provided but not defined"},
		{[]string{"--listen", "tcp:/127.0.0.1:80", "--", exe}, "want [NAME=]NETWORK://ADDRESS"},
		{[]string{"--listen", "sctp://127.0.0.1:80", "--", exe}, "unknown network"},
		{[]string{"--listen", "tcp://127.0.0.1:99999", "--", exe}, "port"},
		{[]string{"--ready-timeout", "5", "--", exe}, "durations look like 30s"},
		{[]string{"--workers", "abc", "--", exe}, "counts are whole numbers"},
		{[]string{"--workers", "0", "--", exe}, "want 1 to 1024"},
		{[]string{"--ready", "ping", "--", exe}, "unknown probe"},
		{[]string{"--drain-signal", "SIGKILL", "--", exe}, "cannot be caught"},
		{[]string{"--drain-signal", "NOPE", "--", exe}, "unknown signal"},
		{[]string{"--drain-signal", "9", "--", exe}, "SIGKILL cannot be caught, so a worker could not drain"},
		{[]string{"--watchdog", "often", "--", exe}, "durations look like 30s"},
		{[]string{"--workers", "1.5", "--", exe}, "counts are whole numbers"},
		{[]string{"--watchdog", "1ns", "--", exe}, "at least 1ms"},
		{[]string{"--log-format", "xml", "--", exe}, "want json or console"},
		{[]string{"--restart-min", "2s", "--restart-max", "1s", "--", exe}, "0 < min <= max"},
		{[]string{"--mode", "swap", "--", exe}, "want overlap or handover"},
		{[]string{"--mode", "handover", "--", exe}, "needs --snapshot"},
		{[]string{"--mode", "handover", "--workers", "2", "--snapshot", "/tmp/s", "--", exe}, "exactly one worker"},
		{[]string{"--snapshot", "/tmp/s", "--", exe}, "is for --mode handover"},
		{[]string{"--mode", "handover", "--snapshot", "/nonexistent/dir/s", "--", exe}, "does not exist"},
		{[]string{"--metrics-listen", "9090", "--", exe}, "want HOST:PORT, such as 127.0.0.1:9090"},
		{[]string{"--metrics-listen", "127.0.0.1:http2", "--", exe}, "want HOST:PORT"},
		{[]string{"--metrics-listen", "127.0.0.1:70000", "--", exe}, "want HOST:PORT"},
		{[]string{"--stop-delay", "-1s", "--", exe}, "want 0 (off) to 1h"},
		{[]string{"--stop-delay", "5", "--", exe}, "durations look like 30s"},
		{nil, "no worker"},
		{[]string{"--", "/nonexistent/worker"}, "does not exist"},
		{[]string{"--", "no-such-program-on-path"}, "not found on PATH"},
		{[]string{"--", notExec}, "not executable"},
		{[]string{"--", "/"}, "is a directory"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Setenv("STATE_DIRECTORY", "")
			_, err := parseFlags(tc.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
		})
	}
}

func TestParseFlagsDefaultsAndNames(t *testing.T) {
	exe, _ := os.Executable()
	o, err := parseFlags([]string{"--listen", "tcp://127.0.0.1:0", "--listen", "admin=unix:///run/a.sock",
		"--drain-signal", "quit", "--", exe, "-x"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.listen[0].Name != "listen0" || o.listen[1].Name != "admin" {
		t.Errorf("names %q, %q; want listen0 and admin", o.listen[0].Name, o.listen[1].Name)
	}
	if o.drainSignal.String() != "quit" || o.readyTimeout != 30*time.Second || o.workers != 1 || o.mode != "overlap" {
		t.Errorf("defaults: %+v", o)
	}
	if len(o.command) != 2 || o.command[1] != "-x" {
		t.Errorf("command %q", o.command)
	}
}

// The drain signal is read as the worker reads SUPERVISOR_DRAIN_SIGNAL
// (contract.ParseDrainSignal): a name in any case, with or without SIG, or
// a number.
func TestParseFlagsDrainSignal(t *testing.T) {
	exe, _ := os.Executable()
	for _, in := range []string{"SIGUSR2", "usr2", "SigUsr2", "12"} {
		o, err := parseFlags([]string{"--drain-signal", in, "--", exe}, io.Discard)
		if err != nil || o.drainSignal != syscall.SIGUSR2 {
			t.Errorf("--drain-signal %s: %v, %v; want SIGUSR2", in, o, err)
		}
	}
}
