package state

import (
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// bytesAllocated returns the bytes fn allocated on the heap.
func bytesAllocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestMillionRecordsStream writes and reads a million 100-byte records (a
// 104 MB file) and checks that neither side holds them in memory: the bytes
// allocated, and the heap in use at any point, stay far below the file size.
func TestMillionRecordsStream(t *testing.T) {
	n := 1_000_000
	if testing.Short() || raceEnabled {
		n = 100_000
	}
	const limit = 1 << 20 // bytes: buffers, not records
	path := filepath.Join(t.TempDir(), "world.snap")
	rec := make([]byte, 100)
	var peak heapPeak
	peak.start()

	start := time.Now()
	written := bytesAllocated(func() {
		w, err := Create(path, Header{Schema: 2, AppVersion: "v1.3"})
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			binary.LittleEndian.PutUint64(rec, uint64(i))
			if err := w.Write(rec); err != nil {
				t.Fatal(err)
			}
			peak.sample(i)
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
	})
	wrote := time.Since(start)

	start = time.Now()
	read := bytesAllocated(func() {
		r, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		for i := 0; ; i++ {
			got, err := r.Next()
			if err == io.EOF {
				if i != n {
					t.Fatalf("read %d records, want %d", i, n)
				}
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 100 || binary.LittleEndian.Uint64(got) != uint64(i) {
				t.Fatalf("record %d = %x", i, got[:8])
			}
			peak.sample(i)
		}
	})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d records, %d MB: write %v, read %v; allocated %d KiB writing, %d KiB reading; heap in use grew by at most %d KiB",
		n, fi.Size()>>20, wrote.Round(time.Millisecond), time.Since(start).Round(time.Millisecond),
		written>>10, read>>10, peak.growth()>>10)
	if written > limit || read > limit {
		t.Errorf("allocated %d bytes writing and %d reading a %d-byte file; want at most %d", written, read, fi.Size(), limit)
	}
	if peak.growth() > limit {
		t.Errorf("heap in use grew by %d bytes; want at most %d", peak.growth(), limit)
	}
}

// heapPeak tracks the growth of the heap in use over a baseline.
type heapPeak struct {
	base, max uint64
}

func (p *heapPeak) start() {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	p.base, p.max = m.HeapInuse, m.HeapInuse
}

// sample reads the heap every 50,000 records (ReadMemStats stops the world).
func (p *heapPeak) sample(i int) {
	if i%50_000 != 0 {
		return
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	p.max = max(p.max, m.HeapInuse)
}

func (p *heapPeak) growth() uint64 { return p.max - p.base }
