package state

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// appVersion returns the app version of the snapshot at path, or "" if it
// cannot be read.
func appVersion(path string) string {
	h, _, err := ReadFile(path)
	if err != nil {
		return ""
	}
	return h.AppVersion
}

// restore reads the snapshot at path with OpenLatest to the end, and
// confirms it.
func restore(t *testing.T, path string) *Reader {
	t.Helper()
	r, err := OpenLatest(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := readAll(r); err != nil {
		t.Fatal(err)
	}
	if err := r.Confirm(); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestPreviousKeptUntilConfirmed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	prev := path + PrevSuffix
	writeSnap(t, path, Header{AppVersion: "a"}, 1)
	if _, err := os.Stat(prev); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the first snapshot has a previous one: %v", err)
	}
	writeSnap(t, path, Header{AppVersion: "b"}, 1)
	if appVersion(path) != "b" || appVersion(prev) != "a" {
		t.Fatalf("after the second Commit: %q, prev %q; want b, a", appVersion(path), appVersion(prev))
	}
	// b was never confirmed: a stays the fallback.
	writeSnap(t, path, Header{AppVersion: "c"}, 1)
	if appVersion(path) != "c" || appVersion(prev) != "a" {
		t.Fatalf("after the third Commit: %q, prev %q; want c, a", appVersion(path), appVersion(prev))
	}
	restore(t, path)
	if _, err := os.Stat(prev); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("prev after Confirm: %v", err)
	}
	writeSnap(t, path, Header{AppVersion: "d"}, 1)
	if appVersion(path) != "d" || appVersion(prev) != "c" {
		t.Fatalf("after Confirm and Commit: %q, prev %q; want d, c", appVersion(path), appVersion(prev))
	}
}

func TestConfirmNeedsTheEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	writeSnap(t, path, Header{AppVersion: "a"}, 3)
	writeSnap(t, path, Header{AppVersion: "b"}, 3)
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	r.Next()
	if err := r.Confirm(); err == nil {
		t.Error("Confirm before the end succeeded")
	}
	r.Close()
	if appVersion(path+PrevSuffix) != "a" {
		t.Error("prev removed")
	}
}

func TestConfirmAfterReplacementKeepsPrevious(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	writeSnap(t, path, Header{AppVersion: "a"}, 1)
	writeSnap(t, path, Header{AppVersion: "b"}, 1)
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	readAll(r)
	r.Close()
	writeSnap(t, path, Header{AppVersion: "c"}, 1) // before the reader confirms b
	if err := r.Confirm(); err != nil {
		t.Fatal(err)
	}
	if appVersion(path+PrevSuffix) != "a" {
		t.Error("Confirm of a replaced snapshot removed the fallback of the new one")
	}
}

// damage makes the snapshot at path unusable in the named way.
func damage(t *testing.T, path, how string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	switch how {
	case "missing":
		err = os.Remove(path)
	case "empty":
		err = os.WriteFile(path, nil, 0o600)
	case "truncated":
		err = os.WriteFile(path, data[:len(data)/2], 0o600)
	case "flipped":
		data[len(data)/2] ^= 0x10
		err = os.WriteFile(path, data, 0o600)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestOpenLatestFallsBack(t *testing.T) {
	for _, how := range []string{"missing", "empty", "truncated", "flipped"} {
		t.Run(how, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s")
			writeSnap(t, path, Header{AppVersion: "a"}, 5)
			writeSnap(t, path, Header{AppVersion: "b"}, 7)
			damage(t, path, how)

			r := restore(t, path)
			if r.Path() != path+PrevSuffix || r.Header().AppVersion != "a" {
				t.Errorf("read %s (%s), want the previous snapshot", r.Path(), r.Header().AppVersion)
			}
			wantErr := map[string]error{"missing": fs.ErrNotExist, "empty": ErrTruncated,
				"truncated": ErrTruncated, "flipped": ErrCorrupt}[how]
			if !errors.Is(r.Refused(), wantErr) {
				t.Errorf("Refused() = %v, want %v", r.Refused(), wantErr)
			}
			// Confirming the fallback keeps it; the next Commit replaces
			// the damaged file and keeps it still.
			if appVersion(path+PrevSuffix) != "a" {
				t.Fatal("Confirm of the previous snapshot removed it")
			}
			writeSnap(t, path, Header{AppVersion: "c"}, 1)
			if appVersion(path) != "c" || appVersion(path+PrevSuffix) != "a" {
				t.Errorf("after the next Commit: %q, prev %q; want c, a", appVersion(path), appVersion(path+PrevSuffix))
			}
		})
	}
}

func TestOpenLatestErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s")

	// Nothing yet: a first start.
	if _, err := OpenLatest(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("no files: %v, want fs.ErrNotExist", err)
	}

	// Damaged and no previous one: the damage, not "does not exist".
	writeSnap(t, path, Header{}, 3)
	damage(t, path, "truncated")
	if _, err := OpenLatest(path); !errors.Is(err, ErrTruncated) || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("truncated, no prev: %v, want ErrTruncated only", err)
	}

	// Both damaged: both errors.
	writeSnap(t, path, Header{}, 3)
	writeSnap(t, path, Header{}, 3) // prev is now the truncated one
	damage(t, path, "flipped")
	_, err := OpenLatest(path)
	if !errors.Is(err, ErrCorrupt) || !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), "backup") {
		t.Errorf("both damaged: %v, want ErrCorrupt and ErrTruncated, and a hint", err)
	}

	// Missing, and the previous one damaged: not a first start.
	os.Remove(path)
	if _, err := OpenLatest(path); !errors.Is(err, ErrTruncated) || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing, prev truncated: %v, want ErrTruncated only", err)
	}
}

func TestOpenLatestNoFallbackOnNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	writeSnap(t, path, Header{Schema: 2}, 1)
	writeSnap(t, path, Header{Schema: 3}, 1)
	if _, err := OpenLatest(path, MaxSchema(2)); !errors.Is(err, ErrSchemaTooNew) {
		t.Errorf("OpenLatest = %v, want ErrSchemaTooNew", err)
	}
}
