package state

import (
	"bytes"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
)

// FuzzReader reads arbitrary bytes as a snapshot, both ways Open does: the
// checksum pass (verify) and the streaming reader, here without the pass in
// front of it so that its own checks are exercised. When fix is set, the
// header and file checksums are recomputed first, so that the fuzzer gets
// past them to the lengths and counts behind. No input may panic, fail with
// an unclassified error, make the reader allocate more than the input's
// size justifies, or be accepted unless it is exactly what Create would
// have written.
func FuzzReader(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, fix bool) {
		// Larger inputs reach no code that smaller ones do not (a small
		// file gets a small read buffer), and would only make the
		// minimisation of new inputs take the whole run.
		if len(data) > maxFuzzInput {
			return
		}
		if fix {
			data = bytes.Clone(data)
			fixChecksums(data)
		}
		var verr, serr error
		var r *Reader
		var recs [][]byte
		read := func() {
			verr = verify("fuzz", bytes.NewReader(data), int64(len(data)))
			r, recs, serr = streamBytes(data, MaxSchema(1<<20))
		}
		// ReadMemStats stops the world and costs 20 times the read: measure
		// one input in 16, chosen by content so that a failure reproduces.
		if crc32.ChecksumIEEE(data)%16 != 0 {
			read()
		} else if allocated, limit := bytesAllocated(read), 4*uint64(len(data))+64<<10; allocated > limit {
			t.Fatalf("reading %d bytes allocated %d, over %d", len(data), allocated, limit)
		}
		if r != nil && r.allocated > int64(len(data)) {
			t.Fatalf("record buffers of %d bytes for %d bytes of input", r.allocated, len(data))
		}
		for _, err := range []error{verr, serr} {
			if err != nil && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrCorrupt) &&
				!errors.Is(err, ErrFormatTooNew) && !errors.Is(err, ErrSchemaTooNew) {
				t.Fatalf("unclassified error: %v", err)
			}
		}
		if serr != nil {
			return
		}
		if verr != nil {
			t.Fatalf("the streaming reader accepted what the checksum pass refused: %v", verr)
		}
		// Accepted: it must be byte for byte what the writer makes of it.
		path := filepath.Join(t.TempDir(), "s")
		if err := WriteFile(path, r.Header(), recs); err != nil {
			t.Fatal(err)
		}
		if again, _ := os.ReadFile(path); !bytes.Equal(again, data) {
			t.Fatalf("accepted %x, but the writer makes %x of its records", data, again)
		}
	})
}

// maxFuzzInput bounds the inputs FuzzReader reads.
const maxFuzzInput = 1 << 10

// fixChecksums overwrites the header CRC and the file CRC where the input's
// header length and size put them.
func fixChecksums(data []byte) {
	if len(data) >= prefixLen {
		if n := int(le.Uint16(data[10:])); n >= 4 && n <= len(data) {
			le.PutUint32(data[n-4:], crc32.Checksum(data[:n-4], castagnoli))
		}
	}
	if len(data) >= 4 {
		le.PutUint32(data[len(data)-4:], crc32.Checksum(data[:len(data)-4], castagnoli))
	}
}

// fuzzSeeds returns valid snapshots and damaged ones.
func fuzzSeeds(f *testing.F) [][]byte {
	var seeds [][]byte
	for _, n := range []int{0, 1, 3} {
		seeds = append(seeds, smallSnapshot(f, Header{Schema: uint32(n), AppVersion: "v1"}, n))
	}
	valid := seeds[2]
	for n := 0; n < len(valid); n += 9 {
		seeds = append(seeds, valid[:n])
	}
	hlen := int(le.Uint16(valid[10:]))
	huge := append(bytes.Clone(valid[:hlen]), le.AppendUint32(nil, MaxRecordSize)...)
	seeds = append(seeds, append(huge, make([]byte, 64)...))
	seeds = append(seeds, append(bytes.Clone(valid), 0))
	return seeds
}
