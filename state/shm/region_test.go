package shm

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCreateUpdateOpen(t *testing.T) {
	r := newAccounts(t)
	if r.Len() != nAccounts || r.Generation() != 1 || sum(r.recs) != total {
		t.Fatalf("new region: %d records, generation %d, sum %d", r.Len(), r.Generation(), sum(r.recs))
	}
	err := r.Update(func(tx *Tx) error {
		tx.Set(5, account(5, 900))
		tx.Set(6, account(6, 1050))
		return tx.Set(6, account(6, 1100)) // the last image of a record wins
	})
	if err != nil {
		t.Fatal(err)
	}
	o, err := Open(r.File(), accounts)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if o.replayed || o.Generation() != 2 || r.Generation() != 2 {
		t.Errorf("Open: replayed %v, generation %d (%d in the first mapping), want false, 2", o.replayed, o.Generation(), r.Generation())
	}
	if balance(o.Record(5)) != 900 || balance(o.Record(6)) != 1100 || sum(o.recs) != total {
		t.Errorf("after the transfer: %d, %d, sum %d", balance(o.Record(5)), balance(o.Record(6)), sum(o.recs))
	}
}

func TestUpdateRefuses(t *testing.T) {
	l := Layout{Name: "small", Version: 1, RecordSize: 16, Capacity: 5}
	r, err := Create("small", l)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	boom := errors.New("boom")
	for _, tc := range []struct {
		name string
		fn   func(tx *Tx) error
		want error // nil: any error
	}{
		{"fn fails", func(tx *Tx) error { tx.Append(account(0, 1)); return boom }, boom},
		{"too many", func(tx *Tx) error {
			tx.Append(account(0, 1))
			for range MaxTxRecords {
				tx.Set(0, account(0, 2))
			}
			return nil
		}, ErrTxTooLarge},
		{"full", func(tx *Tx) error {
			for i := range 6 {
				tx.Append(account(i, 1))
			}
			return nil
		}, ErrFull},
		{"out of range", func(tx *Tx) error { return tx.Set(0, account(0, 1)) }, nil},
		{"wrong size", func(tx *Tx) error { _, err := tx.Append(make([]byte, 15)); return err }, nil},
		{"nested", func(tx *Tx) error { return r.Update(func(*Tx) error { return nil }) }, nil},
	} {
		err := r.Update(tc.fn)
		if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: Update: %v, want %v", tc.name, err, tc.want)
		}
		if r.Len() != 0 {
			t.Fatalf("%s: %d records after a failed Update", tc.name, r.Len())
		}
	}
	var leaked *Tx
	r.Update(func(tx *Tx) error { leaked = tx; return nil })
	if err := leaked.Set(0, account(0, 1)); err == nil {
		t.Error("Set after Update returned: no error")
	}
	r.Close()
	if err := r.Update(func(*Tx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("Update after Close: %v", err)
	}
}

func TestCreateRefuses(t *testing.T) {
	for _, l := range []Layout{
		{Name: "", Version: 1, RecordSize: 16, Capacity: 1},
		{Name: "a name of more than thirty-two bytes", Version: 1, RecordSize: 16, Capacity: 1},
		{Name: "x", Version: 1, RecordSize: 0, Capacity: 1},
		{Name: "x", Version: 1, RecordSize: MaxRecordSize + 1, Capacity: 1},
		{Name: "x", Version: 1, RecordSize: 16, Capacity: 0},
		{Name: "x", Version: 1, RecordSize: MaxRecordSize, Capacity: MaxCapacity},
	} {
		if _, err := Create("x", l); !errors.Is(err, ErrInvalidLayout) {
			t.Errorf("Create(%v): %v, want ErrInvalidLayout", l, err)
		}
	}
}

// TestCreateSeals checks that no holder of a region's memfd can shrink it
// under another's mapping (which would kill the other with SIGBUS).
func TestCreateSeals(t *testing.T) {
	r := newAccounts(t)
	if err := unix.Ftruncate(int(r.File().Fd()), page); !errors.Is(err, unix.EPERM) {
		t.Errorf("ftruncate of the region's memfd: %v, want EPERM", err)
	}
}
