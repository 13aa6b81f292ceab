package shm

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestOpenDamaged damages a region's bytes in the ways a region can be
// damaged and checks that Open says which.
func TestOpenDamaged(t *testing.T) {
	good := regionBytes(t, newAccounts(t).File())
	le := binary.LittleEndian
	for _, tc := range []struct {
		name   string
		damage func(b []byte) []byte
		want   error
	}{
		{"intact", func(b []byte) []byte { return b }, nil},
		{"bad magic", func(b []byte) []byte { b[0] ^= 0xff; return b }, ErrNotRegion},
		{"not a region", func([]byte) []byte { return []byte("#!/bin/sh\necho hello\n") }, ErrNotRegion},
		{"empty", func([]byte) []byte { return nil }, ErrNotRegion},
		{"truncated", func(b []byte) []byte { return b[:len(b)-page] }, ErrSize},
		{"header only", func(b []byte) []byte { return b[:page] }, ErrSize},
		{"half a header", func(b []byte) []byte { return b[:page/2] }, ErrSize},
		{"torn header", func(b []byte) []byte { b[hdrName+2] ^= 1; return b }, ErrDamaged},
		{"header checksum", func(b []byte) []byte { b[hdrCRC] ^= 0x80; return b }, ErrDamaged},
		{"count over capacity", func(b []byte) []byte { le.PutUint64(b[hdrCount:], 1001); return b }, ErrDamaged},
		{"log ahead", func(b []byte) []byte { le.PutUint64(b[page+logCommitted:], 1000); return b }, ErrDamaged},
		{"log behind", func(b []byte) []byte { le.PutUint64(b[page+logApplied:], 1000); return b }, ErrDamaged},
		{"committed entry scribbled", func(b []byte) []byte {
			le.PutUint64(b[page+logCommitted:], le.Uint64(b[page+logApplied:])+1)
			return b
		}, ErrDamaged},
		{"uncommitted entry scribbled", func(b []byte) []byte {
			for i := page + logSeq; i < 2*page; i++ {
				b[i] = 0xa5
			}
			return b
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.damage(append([]byte(nil), good...))
			r, err := Open(memfdWith(t, b), accounts)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open: %v, want %v", err, tc.want)
			}
			if err == nil {
				r.Close()
			}
		})
	}
}

func TestOpenLayoutMismatch(t *testing.T) {
	r := newAccounts(t)
	for _, want := range []Layout{
		{Name: "accounts", Version: 2, RecordSize: 16},
		{Name: "stock", Version: 1, RecordSize: 16},
		{Name: "accounts", Version: 1, RecordSize: 24},
		{Name: "accounts", Version: 1, RecordSize: 16, Capacity: 2000},
	} {
		_, err := Open(r.File(), want)
		var le *LayoutError
		if !errors.Is(err, ErrLayoutMismatch) || !errors.As(err, &le) {
			t.Fatalf("Open as %v: %v, want a *LayoutError", want, err)
		}
		if le.Have != accounts || le.Want != want {
			t.Errorf("LayoutError{%v, %v}, want {%v, %v}", le.Have, le.Want, accounts, want)
		}
		if msg := err.Error(); !strings.Contains(msg, "version 1") || !strings.Contains(msg, want.String()) {
			t.Errorf("the message does not give both layouts: %s", msg)
		}
	}
	if r, err := Open(r.File(), Layout{Name: "accounts", Version: 1, RecordSize: 16}); err != nil {
		t.Errorf("Open with capacity 0: %v", err)
	} else {
		r.Close()
	}
}

// TestOpenCorrupted damages the header and log pages of a region at random
// and checks that Open never panics and fails only with the package's
// errors.
func TestOpenCorrupted(t *testing.T) {
	good := regionBytes(t, newAccounts(t).File())
	rng := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		b := append([]byte(nil), good...)
		for range 1 + rng.IntN(4) {
			i := rng.IntN(2 * page)
			if rng.IntN(2) == 0 {
				i = rng.IntN(hdrGen + 8) // the header's fields
			}
			b[i] = byte(rng.Uint32())
		}
		if rng.IntN(10) == 0 {
			b = b[:rng.IntN(len(b))]
		}
		openAnything(t, b)
	}
}

func FuzzOpen(f *testing.F) {
	small := Layout{Name: "f", Version: 1, RecordSize: 8, Capacity: 4}
	r, err := Create("fuzz", small)
	if err != nil {
		f.Fatal(err)
	}
	r.Update(func(tx *Tx) error {
		tx.Append(make([]byte, 8))
		_, err := tx.Append(make([]byte, 8))
		return err
	})
	f.Add(regionBytes(f, r.File()))
	r.Close()
	f.Fuzz(func(t *testing.T, b []byte) { openAnything(t, b) })
}

// openAnything opens b with its own layout, and checks that Open fails with
// one of the package's errors or returns a usable region.
func openAnything(t *testing.T, b []byte) {
	f := memfdWith(t, b)
	l, err := ReadLayout(f)
	if err == nil {
		var r *Region
		if r, err = Open(f, l); err == nil {
			if r.Len() > l.Capacity {
				t.Fatalf("%d records in use, capacity %d", r.Len(), l.Capacity)
			}
			for i := range r.Len() {
				r.Record(i)
			}
			r.Close()
			return
		}
	}
	for _, known := range []error{ErrNotRegion, ErrSize, ErrDamaged} {
		if errors.Is(err, known) {
			return
		}
	}
	t.Fatalf("Open: %v, not one of the package's errors", err)
}
