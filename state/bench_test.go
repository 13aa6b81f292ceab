package state

import (
	"fmt"
	"io"
	"path/filepath"
	"testing"
)

// benchRecordSize is the size of a record in the benchmarks: about a player.
const benchRecordSize = 100

// BenchmarkWrite measures writing a whole snapshot of n 100-byte records:
// Create, Write each, Commit (with its fsyncs).
func BenchmarkWrite(b *testing.B) {
	for _, n := range []int{10_000, 1_000_000} {
		b.Run(fmt.Sprintf("records=%d", n), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "s")
			rec := make([]byte, benchRecordSize)
			b.SetBytes(int64(n) * (4 + benchRecordSize))
			b.ReportAllocs()
			for b.Loop() {
				w, err := Create(path, Header{Schema: 2, AppVersion: "bench"})
				if err != nil {
					b.Fatal(err)
				}
				for range n {
					w.Write(rec)
				}
				if err := w.Commit(); err != nil {
					b.Fatal(err)
				}
			}
			reportRecords(b, n)
		})
	}
}

// BenchmarkRead measures reading a whole snapshot of n 100-byte records:
// Open (with its checksum pass) and Next to the verified end.
func BenchmarkRead(b *testing.B) {
	for _, n := range []int{10_000, 1_000_000} {
		b.Run(fmt.Sprintf("records=%d", n), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "s")
			w, err := Create(path, Header{Schema: 2, AppVersion: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			rec := make([]byte, benchRecordSize)
			for range n {
				w.Write(rec)
			}
			if err := w.Commit(); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(n) * (4 + benchRecordSize))
			b.ReportAllocs()
			for b.Loop() {
				r, err := Open(path)
				if err != nil {
					b.Fatal(err)
				}
				for {
					if _, err := r.Next(); err == io.EOF {
						break
					} else if err != nil {
						b.Fatal(err)
					}
				}
				r.Close()
			}
			reportRecords(b, n)
		})
	}
}

// reportRecords adds records/s to the benchmark's output.
func reportRecords(b *testing.B, perOp int) {
	b.ReportMetric(float64(perOp)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
