package shm

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"
)

// Version 2 of the accounts adds a level after the id and the balance.
var accountsV2 = Layout{Name: "accounts", Version: 2, RecordSize: 24, Capacity: 2000}

func accountV1toV2(old, new []byte) error {
	copy(new, old)
	binary.LittleEndian.PutUint32(new[16:], 1)
	return nil
}

// openMigrated opens the accounts in f as version 2, migrating them if they
// are of version 1, as a new build would.
func openMigrated(f *os.File) (*Region, error) {
	r, err := Open(f, Layout{Name: "accounts", Version: 2, RecordSize: 24})
	if !errors.Is(err, ErrLayoutMismatch) {
		return r, err
	}
	have, err := ReadLayout(f)
	if err != nil {
		return nil, err
	}
	if have.Version != 1 {
		return nil, err
	}
	old, err := Open(f, have)
	if err != nil {
		return nil, err
	}
	defer old.Close()
	return Migrate(old, accountsV2, "accounts-v2", accountV1toV2)
}

func TestMigrate(t *testing.T) {
	v1 := newAccounts(t)
	before := regionBytes(t, v1.File())[page+accounts.logSize():]
	v2, err := openMigrated(v1.File())
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close()
	if v2.Layout() != accountsV2 || v2.Len() != nAccounts || v2.Generation() != 3 {
		t.Fatalf("migrated: %v, %d records, generation %d", v2.Layout(), v2.Len(), v2.Generation())
	}
	for i := range v2.Len() {
		rec := v2.Record(i)
		if id, level := binary.LittleEndian.Uint64(rec), binary.LittleEndian.Uint32(rec[16:]); id != uint64(i) || balance(rec) != 1000 || level != 1 {
			t.Fatalf("record %d: id %d, balance %d, level %d", i, id, balance(rec), level)
		}
	}
	if _, err := openMigrated(v2.File()); err != nil {
		t.Errorf("the migrated region does not open as version 2: %v", err)
	}

	// A rollback: the old build finds its region as it was.
	if l, err := ReadLayout(v1.File()); err != nil || l != accounts {
		t.Errorf("ReadLayout of the old region: %v, %v", l, err)
	}
	old, err := Open(v1.File(), accounts)
	if err != nil {
		t.Fatalf("the old region does not open as version 1: %v", err)
	}
	defer old.Close()
	if after := regionBytes(t, v1.File())[page+accounts.logSize():]; string(after) != string(before) {
		t.Error("Migrate changed the old region's records")
	}
}

func TestMigrateRefuses(t *testing.T) {
	v1 := newAccounts(t)
	small := accountsV2
	small.Capacity = nAccounts - 1
	if _, err := Migrate(v1, small, "small", accountV1toV2); !errors.Is(err, ErrFull) {
		t.Errorf("Migrate to a smaller capacity: %v, want ErrFull", err)
	}
	boom := errors.New("boom")
	if _, err := Migrate(v1, accountsV2, "v2", func(old, new []byte) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("Migrate with a failing convert: %v", err)
	}
}
