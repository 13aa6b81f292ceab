package shm

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary doubles as a worker that writes a region it is given as fd
// 3, and that the crash tests kill: TestMain dispatches on helperEnv.
const (
	helperEnv      = "SHM_TEST_HELPER" // "transfer" or "stop"
	helperStageEnv = "SHM_TEST_STAGE"  // for "stop": the stage to stop at
	helperTimeout  = 20 * time.Second  // bounds each wait on a helper
)

func TestMain(m *testing.M) {
	name := os.Getenv(helperEnv)
	if name == "" {
		os.Exit(m.Run())
	}
	if err := runHelper(name); err != nil {
		fmt.Fprintf(os.Stderr, "shm test: helper %s: %v\n", name, err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runHelper(name string) error {
	r, err := Open(os.NewFile(3, "region"), accounts)
	if err != nil {
		return err
	}
	switch name {
	case "transfer":
		fmt.Println("ready")
		rng := rand.New(rand.NewPCG(uint64(os.Getpid()), uint64(time.Now().UnixNano())))
		for {
			if err := transfer(r, rng); err != nil {
				return err
			}
		}
	case "stop":
		var at stage
		fmt.Sscan(os.Getenv(helperStageEnv), &at)
		crashHook = func(s stage) {
			if s == at {
				fmt.Println("stopped")
				time.Sleep(helperTimeout) // until the parent kills it
				os.Exit(3)
			}
		}
		return r.Update(func(tx *Tx) error {
			tx.Set(0, account(0, balance(r.Record(0))-7))
			return tx.Set(1, account(1, balance(r.Record(1))+7))
		})
	}
	return fmt.Errorf("unknown helper")
}

// The accounts of the tests: an id and a balance, summing to total.
var accounts = Layout{Name: "accounts", Version: 1, RecordSize: 16, Capacity: 1000}

const (
	nAccounts = 1000
	total     = nAccounts * 1000
)

func account(id int, balance uint64) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint64(b, uint64(id))
	binary.LittleEndian.PutUint64(b[8:], balance)
	return b
}

func balance(rec []byte) uint64 { return binary.LittleEndian.Uint64(rec[8:]) }

// newAccounts creates a region of nAccounts accounts of 1000 each.
func newAccounts(t testing.TB) *Region {
	t.Helper()
	r, err := Create("accounts", accounts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	for i := 0; i < nAccounts; i += MaxTxRecords {
		err := r.Update(func(tx *Tx) error {
			for j := i; j < i+MaxTxRecords && j < nAccounts; j++ {
				if _, err := tx.Append(account(j, 1000)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// transfer moves random amounts around a cycle of 2 to MaxTxRecords distinct
// accounts, in one transaction.
func transfer(r *Region, rng *rand.Rand) error {
	var ids [MaxTxRecords]int
	k := 2 + rng.IntN(MaxTxRecords-1)
	for j := 0; j < k; {
		ids[j] = rng.IntN(r.Len())
		if !contains(ids[:j], ids[j]) {
			j++
		}
	}
	var sent [MaxTxRecords]uint64
	for j := range k {
		sent[j] = rng.Uint64N(balance(r.Record(ids[j])) + 1)
	}
	return r.Update(func(tx *Tx) error {
		for j := range k {
			b := balance(r.Record(ids[j])) - sent[j] + sent[(j+k-1)%k]
			if err := tx.Set(ids[j], account(ids[j], b)); err != nil {
				return err
			}
		}
		return nil
	})
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// sum is the total of the balances of recs, the records' bytes.
func sum(recs []byte) uint64 {
	var s uint64
	for i := 0; i+16 <= len(recs); i += 16 {
		s += balance(recs[i:])
	}
	return s
}

// regionBytes is a copy of r's file.
func regionBytes(t testing.TB, f *os.File) []byte {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, fi.Size())
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// memfdWith is a new memfd, not sealed, holding b.
func memfdWith(t testing.TB, b []byte) *os.File {
	t.Helper()
	fd, err := unix.MemfdCreate("test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "memfd:test")
	t.Cleanup(func() { f.Close() })
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return f
}
