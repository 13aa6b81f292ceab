package state

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as a snapshot writer that the crash test kills:
// TestMain dispatches on helperEnv.
const (
	helperEnv     = "STATE_TEST_HELPER"
	helperPathEnv = "STATE_TEST_PATH"
	helperGenEnv  = "STATE_TEST_GEN" // the first generation to write
)

// helperTimeout bounds each wait on the helper process.
const helperTimeout = 20 * time.Second

func TestMain(m *testing.M) {
	switch name := os.Getenv(helperEnv); name {
	case "":
		os.Exit(m.Run())
	case "writer":
		first, _ := strconv.Atoi(os.Getenv(helperGenEnv))
		if err := helperWriter(os.Getenv(helperPathEnv), first); err != nil {
			fmt.Fprintf(os.Stderr, "state test: helper writer: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	default:
		fmt.Fprintf(os.Stderr, "state test: unknown helper %q\n", name)
		os.Exit(2)
	}
}

// genRecords is how many records generation gen of the crash test writes.
func genRecords(gen int) int { return 1000 + gen%5*700 }

// genRecord is record i of generation gen.
func genRecord(gen, i int) []byte {
	return fmt.Appendf(nil, "gen=%d rec=%d %090d", gen, i, i)
}

// writeGen commits generation gen at path; the app version is gen.
func writeGen(path string, gen int) error {
	w, err := Create(path, Header{Schema: 1, AppVersion: strconv.Itoa(gen)})
	if err != nil {
		return err
	}
	defer w.Abort()
	for i := range genRecords(gen) {
		if err := w.Write(genRecord(gen, i)); err != nil {
			return err
		}
	}
	return w.Commit()
}

// helperWriter commits generation after generation at path, from first on,
// printing each generation's number when committed, until it is killed.
func helperWriter(path string, first int) error {
	for gen := first; ; gen++ {
		if err := writeGen(path, gen); err != nil {
			return err
		}
		fmt.Println(gen)
	}
}

// checkGen reads the snapshot at path and checks that it is one complete
// generation, which it returns.
func checkGen(path string) (int, error) {
	h, recs, err := ReadFile(path)
	if err != nil {
		return 0, err
	}
	gen, err := strconv.Atoi(h.AppVersion)
	if err != nil {
		return 0, fmt.Errorf("app version %q", h.AppVersion)
	}
	if len(recs) != genRecords(gen) {
		return gen, fmt.Errorf("generation %d has %d records, want %d", gen, len(recs), genRecords(gen))
	}
	for i, rec := range recs {
		if !bytes.Equal(rec, genRecord(gen, i)) {
			return gen, fmt.Errorf("generation %d, record %d = %q", gen, i, rec)
		}
	}
	return gen, nil
}

// TestCrashNeverDamagesTheSnapshot kills a writer with SIGKILL at random
// moments, in the middle of writing records or of committing, and checks
// every time that path holds a complete snapshot: the last one the writer
// reported committed, or the one it was committing when it died.
func TestCrashNeverDamagesTheSnapshot(t *testing.T) {
	rounds := 30
	if testing.Short() || raceEnabled {
		rounds = 10
	}
	path := filepath.Join(t.TempDir(), "world.snap")
	if err := writeGen(path, 0); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	current := 0             // the generation at path
	var torn, unreported int // rounds killed mid-write, or between rename and report
	for round := range rounds {
		first := (round + 1) * 1000
		if len(temps(t, path)) != 0 {
			t.Fatalf("round %d: temporary files before the writer starts", round)
		}
		last := killWriter(t, path, first, rng.IntN(3), time.Duration(rng.IntN(15_000))*time.Microsecond)
		gen, err := checkGen(path)
		if err != nil {
			t.Fatalf("round %d: after the kill: %v", round, err)
		}
		want := current
		if last != 0 {
			want = last
		}
		switch gen {
		case want:
		case max(last+1, first):
			unreported++
		default:
			t.Fatalf("round %d: generation %d at %s; the writer reported %d committed, %d was there before",
				round, gen, path, last, current)
		}
		current = gen
		if _, err := os.Stat(path + PrevSuffix); err == nil {
			if _, err := checkGen(path + PrevSuffix); err != nil {
				t.Fatalf("round %d: the previous snapshot: %v", round, err)
			}
		}
		if len(temps(t, path)) != 0 {
			torn++
		}
		if r := restore(t, path); r.Path() != path {
			t.Fatalf("round %d: OpenLatest fell back: %v", round, r.Refused())
		}
		removeStaleTemps(path)
	}
	t.Logf("%d rounds: %d killed while writing, %d between the rename and its report", rounds, torn, unreported)
}

// killWriter starts the writer helper on path from generation first, lets it
// commit commits generations and run for delay more, kills it with SIGKILL,
// and returns the last generation it reported committed (0 if none).
func killWriter(t *testing.T, path string, first, commits int, delay time.Duration) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=writer", helperPathEnv+"="+path,
		helperGenEnv+"="+strconv.Itoa(first))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan int)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			n, _ := strconv.Atoi(sc.Text())
			lines <- n
		}
	}()
	last, seen := 0, 0
	timeout := time.After(helperTimeout)
	for seen < commits {
		select {
		case n, ok := <-lines:
			if !ok {
				t.Fatalf("the writer exited: %v", cmd.Wait())
			}
			last, seen = n, seen+1
		case <-timeout:
			cmd.Process.Kill()
			t.Fatalf("the writer committed %d generations in %v, want %d", last, helperTimeout, commits)
		}
	}
	time.Sleep(delay)
	cmd.Process.Signal(syscall.SIGKILL)
	for n := range lines {
		last = n
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("the writer was not killed: %v", err)
	}
	return last
}
