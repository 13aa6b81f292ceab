package state

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// smallSnapshot returns the bytes of a committed snapshot of n test records.
func smallSnapshot(t testing.TB, h Header, n int) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s")
	writeSnap(t, path, h, n)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// openBytes writes data to a file and reads it as the application would:
// Open, then every record.
func openBytes(t *testing.T, data []byte, opts ...Option) error {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := Open(path, opts...)
	if err != nil {
		return err
	}
	defer r.Close()
	_, err = readAll(r)
	return err
}

// streamBytes reads data with the streaming reader alone, without Open's
// checksum pass, so that its own checks are tested.
func streamBytes(data []byte, opts ...Option) (*Reader, [][]byte, error) {
	r, err := newReader("mem", bytes.NewReader(data), int64(len(data)), opts)
	if err != nil {
		return nil, nil, err
	}
	recs, err := readAll(r)
	return r, recs, err
}

func TestTruncatedAtEveryOffset(t *testing.T) {
	data := smallSnapshot(t, Header{Schema: 1, AppVersion: "v1"}, 5)
	for n := range len(data) {
		cut := data[:n]
		if err := openBytes(t, cut); !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrCorrupt) {
			t.Errorf("Open of the first %d of %d bytes = %v, want ErrTruncated or ErrCorrupt", n, len(data), err)
		}
		if _, _, err := streamBytes(cut); !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrCorrupt) {
			t.Errorf("streaming the first %d of %d bytes = %v, want ErrTruncated or ErrCorrupt", n, len(data), err)
		}
	}
	// The usual cases say truncated, not corrupt.
	for _, n := range []int{0, 5, 20, len(data) / 2, len(data) - 1} {
		if err := openBytes(t, data[:n]); !errors.Is(err, ErrTruncated) {
			t.Errorf("Open of the first %d bytes = %v, want ErrTruncated", n, err)
		}
	}
	if err := openBytes(t, data); err != nil {
		t.Fatalf("the whole file: %v", err)
	}
}

func TestFlippedByteDetected(t *testing.T) {
	data := smallSnapshot(t, Header{Schema: 1, AppVersion: "v1"}, 5)
	for i := range data {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			bad := bytes.Clone(data)
			bad[i] ^= mask
			if err := openBytes(t, bad); err == nil {
				t.Fatalf("Open accepted the file with byte %d ^ %#x", i, mask)
			}
			if _, _, err := streamBytes(bad); err == nil {
				t.Fatalf("the streaming reader accepted the file with byte %d ^ %#x", i, mask)
			}
		}
	}
}

func TestExtraBytesRefused(t *testing.T) {
	// Open's pass finds no trailer at the end, and cannot tell this from a
	// truncation; the streaming reader reaches the trailer and can.
	data := append(smallSnapshot(t, Header{}, 2), 0)
	if err := openBytes(t, data); !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrCorrupt) {
		t.Errorf("Open = %v, want ErrTruncated or ErrCorrupt", err)
	}
	if _, _, err := streamBytes(data); !errors.Is(err, ErrCorrupt) {
		t.Errorf("streaming = %v, want ErrCorrupt", err)
	}
}

func TestNotASnapshot(t *testing.T) {
	err := openBytes(t, []byte("players:\n  alice: 100\n  bob: 95\n........................................"))
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "magic") {
		t.Errorf("Open of a text file = %v, want ErrCorrupt about the magic", err)
	}
}

func TestSchemaTooNew(t *testing.T) {
	data := smallSnapshot(t, Header{Schema: 3, AppVersion: "v2.0"}, 2)
	err := openBytes(t, data, MaxSchema(2))
	var se *SchemaError
	if !errors.As(err, &se) || !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Open = %v, want a *SchemaError", err)
	}
	if se.Schema != 3 || se.Max != 2 || se.AppVersion != "v2.0" {
		t.Errorf("SchemaError = %+v", se)
	}
	for _, want := range []string{"schema 3", "(2)", "v2.0", "newer build"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
	for _, opts := range [][]Option{{MaxSchema(3)}, {MaxSchema(4)}, nil} {
		if err := openBytes(t, data, opts...); err != nil {
			t.Errorf("Open with %d options: %v", len(opts), err)
		}
	}
}

func TestFormatTooNew(t *testing.T) {
	data := smallSnapshot(t, Header{}, 1)
	hlen := int(le.Uint16(data[10:]))
	le.PutUint16(data[8:], FormatVersion+1)
	le.PutUint32(data[hlen-4:], checksumBytes(data[:hlen-4]))
	err := openBytes(t, data)
	if !errors.Is(err, ErrFormatTooNew) || !strings.Contains(err.Error(), "newer build") {
		t.Errorf("Open = %v, want ErrFormatTooNew with a hint", err)
	}
}

func TestMessagesSayWhatToDo(t *testing.T) {
	data := smallSnapshot(t, Header{}, 3)
	for _, err := range []error{openBytes(t, data[:len(data)-3]), openBytes(t, append(data[:40:40], data[41:]...))} {
		if !strings.HasPrefix(err.Error(), "state: ") || !strings.Contains(err.Error(), "previous snapshot") {
			t.Errorf("message %q: want the package prefix and a hint", err)
		}
	}
}

// A length field that claims more than the file holds must not make the
// reader allocate it: both at the limit and past it.
func TestHugeLengthAllocatesNothing(t *testing.T) {
	data := smallSnapshot(t, Header{}, 0)
	hlen := int(le.Uint16(data[10:]))
	for _, n := range []uint32{MaxRecordSize, MaxRecordSize + 1, endMarker - 1} {
		bad := append(bytes.Clone(data[:hlen]), le.AppendUint32(nil, n)...)
		bad = append(bad, make([]byte, 100)...)
		r, _, err := streamBytes(bad)
		if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrCorrupt) {
			t.Errorf("length %d: %v", n, err)
		}
		if r.allocated != 0 {
			t.Errorf("length %d: allocated %d bytes for a %d-byte file", n, r.allocated, len(bad))
		}
		allocs := testing.AllocsPerRun(10, func() { streamBytes(bad) })
		if allocs > 30 {
			t.Errorf("length %d: %v allocations per read", n, allocs)
		}
		if b := bytesAllocated(func() { streamBytes(bad); openBytes(t, bad) }); b > 1<<20 {
			t.Errorf("length %d: reading a %d-byte file allocated %d bytes", n, len(bad), b)
		}
	}
}

// TestStreamingMatchesOpen: the streaming reader's own checks agree with
// Open's checksum pass on a valid file, and on each record's content.
func TestStreamingMatchesOpen(t *testing.T) {
	data := smallSnapshot(t, Header{Schema: 4}, 50)
	r, recs, err := streamBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, recs, 50)
	if r.Header().Schema != 4 {
		t.Errorf("schema %d", r.Header().Schema)
	}
	if _, err := r.Next(); err != io.EOF {
		t.Errorf("Next after the end = %v", err)
	}
}

// A file whose checksums are right but whose trailer miscounts its records
// (a buggy writer, not damage) passes Open's pass, and is refused by Next at
// the end.
func TestCountMismatchWithValidChecksums(t *testing.T) {
	data := smallSnapshot(t, Header{}, 3)
	le.PutUint64(data[len(data)-20:], 4)
	fixChecksums(data)
	err := openBytes(t, data)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "3 records, the trailer says 4") ||
		!strings.Contains(err.Error(), hintDiscard) {
		t.Errorf("Open and read = %v, want ErrCorrupt about the count", err)
	}
}
