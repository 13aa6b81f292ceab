package handoff

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/procswitch/supervisor/internal/contract"
)

func TestNotify(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		name := "path"
		addr := filepath.Join(shortTempDir(t), "notify")
		if abstract {
			name, addr = "abstract", fmt.Sprintf("@handoff-test-%d-%d", os.Getpid(), time.Now().UnixNano())
		}
		t.Run(name, func(t *testing.T) {
			clearContractEnv(t)
			sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
			if err != nil {
				t.Fatal(err)
			}
			defer sock.Close()
			t.Setenv(contract.EnvNotifySocket, addr)
			w, err := New()
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if _, ok := os.LookupEnv(contract.EnvNotifySocket); ok {
				t.Errorf("%s still set after New", contract.EnvNotifySocket)
			}
			sends := []struct {
				send func() error
				want string
			}{
				{w.Ready, "READY=1"},
				{func() error { return w.Status("serving 3 players") }, "STATUS=serving 3 players"},
				{w.Watchdog, "WATCHDOG=1"},
				{w.Stopping, "STOPPING=1"},
				{func() error { return w.notify("RELOADING=1\nMONOTONIC_USEC=1") }, "RELOADING=1\nMONOTONIC_USEC=1"},
			}
			buf := make([]byte, 4096)
			for _, s := range sends {
				if err := s.send(); err != nil {
					t.Fatalf("sending %q: %v", s.want, err)
				}
				sock.SetReadDeadline(time.Now().Add(10 * time.Second))
				n, err := sock.Read(buf)
				if err != nil || string(buf[:n]) != s.want {
					t.Fatalf("received %q, %v; want %q", buf[:n], err, s.want)
				}
			}
		})
	}
}

func TestNotifyErrors(t *testing.T) {
	clearContractEnv(t)
	w, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for _, send := range []func() error{w.Ready, w.Stopping, w.Watchdog, func() error { return w.Status("x") }} {
		if err := send(); err != nil {
			t.Errorf("not supervised: %v, want nil (no-op)", err)
		}
	}
	if err := w.Status("two\nlines"); err == nil {
		t.Error("Status with a newline: nil error")
	}

	t.Setenv(contract.EnvNotifySocket, filepath.Join(shortTempDir(t), "absent"))
	w2, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	if err := w2.Ready(); err == nil || !strings.HasPrefix(err.Error(), "handoff: notify: ") {
		t.Errorf("Ready to a missing socket: %v, want a handoff: notify: error", err)
	}
}
