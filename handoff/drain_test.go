package handoff

import (
	"io"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/internal/contract"
)

// TestDrainingSelf sends the configured drain signal to this process.
// SIGUSR1 is caught by New, so it cannot end the test binary.
func TestDrainingSelf(t *testing.T) {
	clearContractEnv(t)
	t.Setenv(contract.EnvDrainSignal, "SIGUSR1")
	w, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	select {
	case <-w.Draining():
		t.Fatal("draining before any signal")
	default:
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.Draining():
	case <-time.After(10 * time.Second):
		t.Fatal("Draining not closed within 10s of SIGUSR1")
	}
}

// TestDrainingRearmed: once re-armed (a handover whose save failed), a
// new channel waits for the next drain signal; re-arming before any signal
// keeps the channel.
func TestDrainingRearmed(t *testing.T) {
	clearContractEnv(t)
	t.Setenv(contract.EnvDrainSignal, "SIGUSR1")
	w, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	first := w.Draining()
	w.undrain()
	if w.Draining() != first {
		t.Fatal("re-arming before any signal made a new channel")
	}
	for i := range 2 {
		ch := w.Draining()
		select {
		case <-ch:
			t.Fatalf("round %d: draining before the signal", i)
		default:
		}
		if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: Draining not closed within 10s of SIGUSR1", i)
		}
		w.undrain()
	}
}

// helperDrain says ready, waits for the drain, says stopping, then exits
// when its stdin reaches EOF.
func helperDrain() error {
	w, err := New()
	if err != nil {
		return err
	}
	if err := w.Ready(); err != nil {
		return err
	}
	<-w.Draining()
	if err := w.Stopping(); err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, os.Stdin)
	return err
}

func TestDrainSignals(t *testing.T) {
	tests := []struct {
		name string
		env  string // SUPERVISOR_DRAIN_SIGNAL
		send syscall.Signal
	}{
		{"default is SIGTERM", "", syscall.SIGTERM},
		{"configured", "SIGUSR2", syscall.SIGUSR2},
		{"SIGTERM always", "SIGUSR2", syscall.SIGTERM},
		{"SIGINT always", "SIGWINCH", syscall.SIGINT},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startChild(t, "drain", nil, nil, contract.EnvDrainSignal+"="+tt.env)
			c.expect(t, contract.MsgReady, readyTimeout)
			c.signal(t, tt.send)
			c.expect(t, contract.MsgStopping, readyTimeout)
			// A second signal while draining must not kill the worker.
			c.signal(t, tt.send)
			c.stdin.Close()
			if err := c.wait(t, exitTimeout); err != nil {
				t.Fatalf("drain helper: %v; stderr:\n%s", err, c.stderr.String())
			}
		})
	}
}
