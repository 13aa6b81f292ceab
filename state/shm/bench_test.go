package shm

import "testing"

// BenchmarkUpdate2 measures a transaction of 2 records, a transfer.
func BenchmarkUpdate2(b *testing.B) {
	r := newAccounts(b)
	from, to := account(1, 900), account(2, 1100)
	transfer := func(tx *Tx) error {
		tx.Set(1, from)
		return tx.Set(2, to)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := r.Update(transfer); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUpdate8 measures a transaction of MaxTxRecords records.
func BenchmarkUpdate8(b *testing.B) {
	r := newAccounts(b)
	rec := account(1, 1000)
	fn := func(tx *Tx) error {
		for i := range MaxTxRecords {
			tx.Set(i, rec)
		}
		return nil
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := r.Update(fn); err != nil {
			b.Fatal(err)
		}
	}
}
