package procwatch

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func init() {
	// orphanpipe is orphan whose sleeper keeps the output pipe open.
	helpers["orphanpipe"] = func() int {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), helperEnv+"=sleep")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return 1
		}
		logLine("started", "pid", cmd.Process.Pid)
		return 0
	}
}

// TestLogFindOutlivesProcess: Log.Find reads on after the process Start
// started has exited, as long as a process it left behind holds the pipe.
func TestLogFindOutlivesProcess(t *testing.T) {
	if err := BecomeSubreaper(); err != nil {
		t.Fatal(err)
	}
	p := startHelper(t, "orphanpipe")
	e, i, err := p.Log.Find(0, bound, "started", func(e Entry) bool { return e.Is("started", "pid") })
	if err != nil {
		t.Fatal(err)
	}
	orphan := e.Int("pid")
	w, err := WatchExit(orphan)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	select {
	case <-p.Done():
	case <-time.After(bound):
		t.Fatal("orphan helper did not exit")
	}
	// The sleeper holds the pipe: no EOF, a timeout.
	never := func(Entry) bool { return false }
	if _, _, err := p.Log.Find(i+1, drainAfterExit+200*time.Millisecond, "nothing", never); !errors.Is(err, ErrTimeout) {
		t.Errorf("Log.Find with the pipe still held: %v, want ErrTimeout", err)
	}
	if err := syscall.Kill(orphan, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ws, err := w.WaitStatus(bound)
	if err != nil {
		t.Fatal(err)
	}
	if !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("WaitStatus of the orphan killed by SIGTERM: %v", ws)
	}
	if _, _, err := p.Log.Find(i+1, bound, "nothing", never); !errors.Is(err, ErrEnded) {
		t.Errorf("Log.Find once every holder exited: %v, want ErrEnded", err)
	}
	if _, err := ReadStat(orphan); err == nil {
		t.Errorf("orphan %d still in /proc after WaitStatus", orphan)
	}
}
