package handoff

import (
	"errors"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/internal/contract"
)

// reloadBound bounds each wait of the reload tests.
const reloadBound = 10 * time.Second

// TestReloads: the reload signal named by SUPERVISOR_RELOAD_SIGNAL is
// answered RELOADING=1 with MONOTONIC_USEC= at once, then becomes a request
// on Reloads, answered READY=1 with VERSION= or RELOAD=failed with
// RELOAD_ERROR=; before Reloads is called, RELOAD=failed at once. The
// process is not killed by the signal in either case.
func TestReloads(t *testing.T) {
	clearContractEnv(t)
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(shortTempDir(t), "notify"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	t.Setenv(contract.EnvNotifySocket, sock.LocalAddr().String())
	t.Setenv(contract.EnvReloadSignal, "SIGUSR1")
	w, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	read := func() string {
		t.Helper()
		buf := make([]byte, 4096)
		sock.SetReadDeadline(time.Now().Add(reloadBound))
		n, err := sock.Read(buf)
		if err != nil {
			t.Fatalf("no notify message within %v: %v", reloadBound, err)
		}
		return string(buf[:n])
	}
	kill := func() {
		t.Helper()
		if err := syscall.Kill(syscall.Getpid(), syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
	}

	kill() // nobody asked for reloads yet
	if got, want := read(), "RELOAD=failed\nRELOAD_ERROR=this worker does not reload in place (handoff: Reloads was never called)"; got != want {
		t.Fatalf("before Reloads: %q, want %q", got, want)
	}

	reloads := w.Reloads()
	for _, answer := range []struct {
		send func(Reload) error
		want string
	}{
		{func(r Reload) error { return r.Done("scripts-42") }, "READY=1\nVERSION=scripts-42"},
		{func(r Reload) error { return r.Done("") }, "READY=1"},
		{func(r Reload) error { return r.Failed(errors.New("bad.lua:3: syntax error\nstack…")) },
			"RELOAD=failed\nRELOAD_ERROR=bad.lua:3: syntax error"},
		// Cut to the bound on a character's boundary, marked, never a torn
		// UTF-8 sequence; a tab becomes a space.
		{func(r Reload) error { return r.Failed(errors.New("x\t" + strings.Repeat("é", 400))) },
			"RELOAD=failed\nRELOAD_ERROR=x " + strings.Repeat("é", 253) + "..."},
	} {
		kill()
		got := read()
		if !strings.HasPrefix(got, "RELOADING=1\nMONOTONIC_USEC=") || len(got) == len("RELOADING=1\nMONOTONIC_USEC=") {
			t.Fatalf("at the signal: %q, want RELOADING=1 and MONOTONIC_USEC=", got)
		}
		var r Reload
		select {
		case r = <-reloads:
		case <-time.After(reloadBound):
			t.Fatalf("no reload request within %v", reloadBound)
		}
		if err := answer.send(r); err != nil {
			t.Fatal(err)
		}
		if got := read(); got != answer.want {
			t.Errorf("answer: %q, want %q", got, answer.want)
		}
	}
	if err := w.ReportVersion("two\nlines"); err == nil {
		t.Error("ReportVersion with a newline: nil error")
	}
	if err := w.ReportVersion("scripts-43"); err != nil || read() != "VERSION=scripts-43" {
		t.Errorf("ReportVersion: %v", err)
	}
}

// TestReloadsUnset: without SUPERVISOR_RELOAD_SIGNAL there is no reload
// channel.
func TestReloadsUnset(t *testing.T) {
	clearContractEnv(t)
	w, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.Reloads() != nil {
		t.Error("Reloads without SUPERVISOR_RELOAD_SIGNAL: a channel, want nil")
	}
	t.Setenv(contract.EnvReloadSignal, "SIGKILL")
	if _, err := New(); err == nil || !strings.Contains(err.Error(), contract.EnvReloadSignal) {
		t.Errorf("New with %s=SIGKILL: %v, want an error naming it", contract.EnvReloadSignal, err)
	}
}
