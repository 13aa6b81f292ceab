package supervisor

import (
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// predecessorConn is one connection a fake predecessor hands over.
func predecessorConn(t *testing.T) []StoredConn {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Error(err)
		return nil
	}
	t.Cleanup(func() { unix.Close(fds[1]) })
	return []StoredConn{{Name: "conn0", FD: fds[0]}}
}

// aheadMachine is a supervisor that replaces a predecessor (handover mode),
// whose HandOver answers with handOver once asked.
func aheadMachine(t *testing.T, handOver func() ([]StoredConn, error)) (*machine, chan struct{}) {
	asked := make(chan struct{}, 1)
	m := newMachine(t, newMachineEnv(t), func(c *Config) {
		handoverMode(c)
		c.processes.(*fakeProcesses).exitOnDrain = true
		c.Predecessor = func() ([]StoredConn, error) {
			asked <- struct{}{}
			return handOver()
		}
	})
	return m, asked
}

// TestPredecessorHandsOver: the first worker starts ahead, with a handover
// connection and no stored connections; READY=1 before GO is ignored;
// WAITING asks the predecessor, whose connections go to the worker with
// GO; READY=1 then makes the generation serve.
func TestPredecessorHandsOver(t *testing.T) {
	m, asked := aheadMachine(t, func() ([]StoredConn, error) { return predecessorConn(t), nil })
	w := m.view().being
	if w == nil || w.handover == nil {
		t.Fatal("the first worker started without a handover connection")
	}
	m.notify(w, "READY", "1")
	if st := m.status(); st.State != "starting" {
		t.Fatalf("READY=1 before WAITING: state %s, want starting", st.State)
	}
	select {
	case <-asked:
		t.Fatal("the predecessor was asked before the worker said WAITING")
	default:
	}
	m.send(waitingEvent{w: w})
	select {
	case <-asked:
	case <-time.After(waitBound):
		t.Fatalf("the predecessor was not asked within %v of WAITING", waitBound)
	}
	m.waitFor("GO", func() bool {
		return m.logs.count("self-upgrade: the previous supervisor's worker saved; restoring") > 0
	})
	m.notify(w, "READY", "1")
	st := m.status()
	if st.State != "serving" {
		t.Fatalf("READY=1 after GO: state %s, want serving", st.State)
	}
	if e, _ := m.logs.find(0, "self-upgrade: the first worker restored the previous supervisor's snapshot and connections", nil); e == nil || e["connections"] != float64(1) {
		t.Errorf("no restore line with 1 connection: %v", e)
	}
}

// TestPredecessorFails: when the predecessor cannot hand over (its worker
// could not save, and serves on), or the worker started ahead exits, Run
// returns the reason and no worker is left: the successor exits, it never
// restarts a worker the predecessor's is serving beside.
func TestPredecessorFails(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		fail       func(m *machine, w *worker)
	}{
		{"save failed", "could not hand over: fake: no space left on device", func(m *machine, w *worker) {
			m.send(waitingEvent{w: w})
		}},
		{"worker exits", "exited before it was ready", func(m *machine, w *worker) { m.exit(w) }},
		// The exit may come first, or the failed pass of the connections.
		{"worker exits after asking", "", func(m *machine, w *worker) {
			m.send(waitingEvent{w: w})
			m.exit(w)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := aheadMachine(t, func() ([]StoredConn, error) {
				if tc.name == "save failed" {
					return nil, errors.New("fake: no space left on device")
				}
				return predecessorConn(t), nil
			})
			w := m.view().being
			tc.fail(m, w)
			err := m.wait()
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "previous one goes on serving") {
				t.Fatalf("Run: %v, want an error with %q that says the previous supervisor serves on", err, tc.want)
			}
			m.ran = new(error) // close: Run's error was this test's
			if n := m.logs.count("worker started"); n != 1 {
				t.Errorf("%d workers started, want 1: a worker started ahead is never restarted", n)
			}
		})
	}
}
