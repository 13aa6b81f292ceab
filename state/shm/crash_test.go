package shm

import (
	"bufio"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// startHelper starts helper name with the region's memfd as fd 3 and waits
// for the first line it prints.
func startHelper(t *testing.T, r *Region, name string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), helperEnv+"="+name), env...)
	cmd.ExtraFiles = []*os.File{r.File()}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make(chan bool, 1)
	go func() { line <- bufio.NewScanner(out).Scan() }()
	select {
	case ok := <-line:
		if !ok {
			t.Fatalf("helper %s exited before its first line: %v", name, wait(cmd))
		}
	case <-time.After(helperTimeout):
		cmd.Process.Kill()
		t.Fatalf("helper %s printed nothing in %v", name, helperTimeout)
	}
	return cmd
}

// kill kills cmd with SIGKILL and waits for it to exit.
func kill(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := wait(cmd); err == nil {
		t.Fatal("the helper exited normally before the kill")
	}
}

// wait waits for cmd, at most helperTimeout.
func wait(cmd *exec.Cmd) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(helperTimeout):
		cmd.Process.Kill()
		return <-done
	}
}

// check opens the region in f and checks that the accounts are all there and
// sum to total; it returns whether Open replayed a transaction and the
// generation.
func check(t *testing.T, f *os.File) (replayed bool, gen uint64) {
	t.Helper()
	r, err := Open(f, accounts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Len() != nAccounts {
		t.Fatalf("%d accounts, want %d", r.Len(), nAccounts)
	}
	if s := sum(r.recs); s != total {
		t.Fatalf("balances sum to %d, want %d", s, total)
	}
	return r.replayed, r.Generation()
}

// TestKillWriter kills a worker doing transfers at random instants and
// checks after each kill that no money was made or lost.
func TestKillWriter(t *testing.T) {
	kills := 100
	if testing.Short() || raceEnabled { // a child under the race detector starts in ~0.1 s
		kills = 50
	}
	r := newAccounts(t)
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	var replays, torn int
	var gen uint64
	for i := range kills {
		cmd := startHelper(t, r, "transfer")
		time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond) // the random instant
		kill(t, cmd)
		if sum(r.recs) != total {
			torn++ // only Open's replay can save these
		}
		replayed, g := check(t, r.File())
		if g < gen+2 {
			t.Fatalf("kill %d: generation %d after %d: the helper's Open and check's should each add 1", i, g, gen)
		}
		gen = g
		if replayed {
			replays++
		}
	}
	t.Logf("%d kills: %d between a commit and its end, replayed by Open; %d left the records torn", kills, replays, torn)
	if torn > replays {
		t.Errorf("%d kills left the records torn, Open replayed only %d", torn, replays)
	}
}

// TestKillAtEachStage stops a worker at each stage of a commit, kills it,
// and checks what Open finds: the transfer of 7 from account 0 to account 1
// entirely, or not at all, whereas the raw records are torn in the middle of
// applying it.
func TestKillAtEachStage(t *testing.T) {
	for _, tc := range []struct {
		name    string
		at      stage
		applied bool // Open finds the transfer
		torn    bool // the records before Open do not sum to total
	}{
		{"logged", stageLogged, false, false},
		{"committed", stageCommitted, true, false},
		{"applying", stageApplying, true, true},
		{"applied", stageApplied, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newAccounts(t)
			cmd := startHelper(t, r, "stop", helperStageEnv+"="+strconv.Itoa(int(tc.at)))
			kill(t, cmd)
			raw := regionBytes(t, r.File())[page+accounts.logSize():][:nAccounts*16]
			if torn := sum(raw) != total; torn != tc.torn {
				t.Errorf("records sum to %d before Open, want torn %v", sum(raw), tc.torn)
			}
			replayed, _ := check(t, r.File())
			if replayed != tc.applied {
				t.Errorf("Open replayed %v, want %v", replayed, tc.applied)
			}
			want := uint64(1000)
			if tc.applied {
				want -= 7
			}
			if got := balance(r.Record(0)); got != want {
				t.Errorf("account 0 has %d, want %d", got, want)
			}
		})
	}
}
