package test

import (
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/test/procwatch"
)

func init() {
	// sigrecord serves and says READY=1, and logs every signal it gets; it
	// exits at SIGTERM, the drain signal.
	helpers["sigrecord"] = helperSigRecord
}

// sigLine begins the line sigrecord logs for each signal it gets.
const sigLine = "helper sigrecord: pid "

func helperSigRecord() int {
	ln, err := passedListener(0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper sigrecord: %v\n", err)
		return 1
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
	pid := strconv.Itoa(os.Getpid())
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Worker-Pid", pid)
		fmt.Fprintln(w, "recording signals")
	}))
	if err := sdNotify("READY=1"); err != nil {
		fmt.Fprintf(os.Stderr, "helper sigrecord: %v\n", err)
		return 1
	}
	for sig := range sigs {
		fmt.Fprintf(os.Stderr, "%s%s got %s\n", sigLine, pid, sig)
		if sig == syscall.SIGTERM {
			return 0
		}
	}
	return 0
}

// TestSignalsReachOnlyTheSupervisor proves that the supervisor forwards no
// signal: SIGHUP (an upgrade), SIGUSR2 (a re-exec in place) and a SIGINT
// sent to the supervisor's whole process group, as a terminal's Ctrl-C
// does, reach its workers only as the drain signal, which the supervisor
// sends itself when a worker is to drain. Workers run in process groups of
// their own.
func TestSignalsReachOnlyTheSupervisor(t *testing.T) {
	s := startSupervisor(t, supervisorConfig{binary: helperBin, env: []string{helperEnv + "=sigrecord"},
		flags: goodFlags("--self-upgrade", "exec"), ownGroup: true})
	s.waitListening("http")
	first := s.waitReady(1)
	u := s.hup() // the first worker drains: SIGTERM
	if !u.OK {
		t.Fatalf("upgrade: %+v", u)
	}
	s.waitDrained(u.Start, 1)
	s.reexec() // nothing for the workers
	mark := s.Log.Len()
	if err := syscall.Kill(-s.PID, syscall.SIGINT); err != nil { // the group: Ctrl-C
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-time.After(stopBound):
		t.Fatalf("the supervisor did not stop within %v of SIGINT to its group", stopBound)
	}
	s.Log.WaitEOF(stopBound)
	got := map[int][]string{}
	for _, e := range s.Log.All() {
		if rest, ok := strings.CutPrefix(e.Raw, sigLine); ok {
			f := strings.Fields(rest)
			pid, _ := strconv.Atoi(f[0])
			got[pid] = append(got[pid], strings.Join(f[2:], " "))
		}
	}
	for _, pid := range append(first.pids, u.PIDs...) {
		if fmt.Sprint(got[pid]) != "[terminated]" {
			t.Errorf("worker %d got %v, want only the drain signal, once", pid, got[pid])
		}
	}
	if _, _, err := s.Log.Find(mark, 0, "the stop", func(e procwatch.Entry) bool { return e.Is("stopped") }); err != nil {
		t.Errorf("no stop logged: %v", err)
	}
}
