package state

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// record returns the i-th test record; lengths vary, and record 0 is empty.
func record(i int) []byte {
	if i == 0 {
		return nil
	}
	return fmt.Appendf(nil, "player-%d coin=%d %s", i, i*7, strings.Repeat("x", i%40))
}

// writeSnap commits a snapshot of n test records at path.
func writeSnap(t testing.TB, path string, h Header, n int) {
	t.Helper()
	w, err := Create(path, h)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for i := range n {
		if err := w.Write(record(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
}

// readAll reads the records of r to the end, copying them.
func readAll(r *Reader) ([][]byte, error) {
	var recs [][]byte
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return recs, nil
		}
		if err != nil {
			return recs, err
		}
		recs = append(recs, bytes.Clone(rec))
	}
}

// checkRecords fails unless recs are the first n test records.
func checkRecords(t *testing.T, recs [][]byte, n int) {
	t.Helper()
	if len(recs) != n {
		t.Fatalf("read %d records, want %d", len(recs), n)
	}
	for i, rec := range recs {
		if !bytes.Equal(rec, record(i)) {
			t.Fatalf("record %d = %q, want %q", i, rec, record(i))
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 2, 1000, 10_000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "world.snap")
			created := time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)
			h := Header{Schema: 2, AppVersion: "v1.3", Created: created}
			writeSnap(t, path, h, n)

			r, err := Open(path, MaxSchema(2))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got := r.Header()
			if got.Schema != 2 || got.AppVersion != "v1.3" || !got.Created.Equal(created) {
				t.Errorf("header = %+v, want %+v", got, h)
			}
			recs, err := readAll(r)
			if err != nil {
				t.Fatal(err)
			}
			checkRecords(t, recs, n)
			if _, err := r.Next(); err != io.EOF {
				t.Errorf("Next after the end = %v, want io.EOF", err)
			}
			if r.Path() != path || r.Refused() != nil {
				t.Errorf("Path, Refused = %q, %v; want %q, nil", r.Path(), r.Refused(), path)
			}
		})
	}
}

func TestFileSize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	writeSnap(t, path, Header{AppVersion: "v9"}, 3)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	want := headerMinLen + 2 + trailerLen
	for i := range 3 {
		want += 4 + len(record(i))
	}
	if fi.Size() != int64(want) {
		t.Errorf("size %d, want %d", fi.Size(), want)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestCreatedDefaultsToNow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	before := time.Now()
	writeSnap(t, path, Header{}, 0)
	h, _, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if h.Created.Before(before) || h.Created.After(time.Now()) {
		t.Errorf("created %v, want about now", h.Created)
	}
}

func TestWriteFileReadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	in := [][]byte{[]byte("a"), {}, []byte("ccc")}
	if err := WriteFile(path, Header{Schema: 7}, in); err != nil {
		t.Fatal(err)
	}
	h, out, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if h.Schema != 7 || len(out) != 3 || string(out[0]) != "a" || len(out[1]) != 0 || string(out[2]) != "ccc" {
		t.Errorf("ReadFile = %+v, %q", h, out)
	}
}

func TestLimits(t *testing.T) {
	dir := t.TempDir()
	if _, err := Create(filepath.Join(dir, "s"), Header{AppVersion: strings.Repeat("v", MaxAppVersionLen+1)}); err == nil {
		t.Error("Create accepted an app version over the limit")
	}
	w, err := Create(filepath.Join(dir, "s"), Header{AppVersion: strings.Repeat("v", MaxAppVersionLen)})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if err := w.Write(make([]byte, MaxRecordSize+1)); !errors.Is(err, ErrRecordTooLarge) {
		t.Errorf("Write of MaxRecordSize+1 bytes = %v, want ErrRecordTooLarge", err)
	}
	if err := w.Write(make([]byte, MaxRecordSize)); err != nil {
		t.Errorf("Write of MaxRecordSize bytes: %v", err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	_, recs, err := ReadFile(filepath.Join(dir, "s"))
	if err != nil || len(recs) != 1 || len(recs[0]) != MaxRecordSize {
		t.Errorf("ReadFile: %d records, %v", len(recs), err)
	}
}

func TestWriterAfterCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	w, err := Create(path, Header{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := w.Write([]byte("x")); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("Write after Commit = %v, want fs.ErrClosed", err)
	}
	if err := w.Commit(); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("second Commit = %v, want fs.ErrClosed", err)
	}
	if err := w.Abort(); err != nil {
		t.Errorf("Abort after Commit = %v", err)
	}
	if _, _, err := ReadFile(path); err != nil {
		t.Errorf("the committed snapshot: %v", err)
	}
}

// temps lists the temporary files next to path.
func temps(t *testing.T, path string) []string {
	t.Helper()
	names, err := filepath.Glob(path + tempSuffix + "*")
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestAbortLeavesTheOldSnapshot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	writeSnap(t, path, Header{AppVersion: "old"}, 10)
	w, err := Create(path, Header{AppVersion: "new"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		w.Write(record(i))
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	h, recs, err := ReadFile(path)
	if err != nil || h.AppVersion != "old" || len(recs) != 10 {
		t.Fatalf("after Abort: %q, %d records, %v; want the old snapshot", h.AppVersion, len(recs), err)
	}
	if names := temps(t, path); len(names) != 0 {
		t.Errorf("temporary files left: %q", names)
	}
	if _, err := os.Stat(path + PrevSuffix); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s exists after Abort: %v", PrevSuffix, err)
	}
}

func TestStaleTempsRemoved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	stale := path + tempSuffix + "123"
	if err := os.WriteFile(stale, []byte("torn"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A writer still at work holds a lock: its file is left alone.
	busy, err := Create(path, Header{})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Abort()
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale temporary file not removed: %v", err)
	}
	w, err := Create(path, Header{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(busy.tmp.name); err != nil {
		t.Errorf("a live writer's file was removed: %v", err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := busy.Commit(); err != nil {
		t.Errorf("the other writer's Commit: %v", err)
	}
	if names := temps(t, path); len(names) != 0 {
		t.Errorf("temporary files left: %q", names)
	}
}

func TestCRCIsCastagnoli(t *testing.T) {
	// The check value FORMAT.md gives.
	if sum := checksumBytes([]byte("123456789")); sum != 0xE3069283 {
		t.Errorf("CRC of 123456789 = %08x, want e3069283", sum)
	}
}

func checksumBytes(b []byte) uint32 {
	sum, _ := checksum("", bytes.NewReader(b), int64(len(b)))
	return sum
}

func TestWriteErrorKeepsTheOldSnapshot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	writeSnap(t, path, Header{AppVersion: "old"}, 3)
	w, err := Create(path, Header{AppVersion: "new"})
	if err != nil {
		t.Fatal(err)
	}
	w.tmp.f.Close() // as a full disk would: every write fails
	for i := 0; err == nil && i < 10*writeBufferSize; i++ {
		err = w.Write(record(i))
	}
	if err == nil || !strings.HasPrefix(err.Error(), "state: writing ") {
		t.Fatalf("Write on a failing file = %v", err)
	}
	if err := w.Commit(); err == nil {
		t.Fatal("Commit after a write error succeeded")
	}
	if appVersion(path) != "old" {
		t.Error("the old snapshot was replaced")
	}
	if names := temps(t, path); len(names) != 0 {
		t.Errorf("temporary files left: %q", names)
	}
}
