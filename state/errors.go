package state

import (
	"errors"
	"fmt"
	"io/fs"
)

// Errors a snapshot can fail with. Errors returned by this package wrap one of
// them (test with errors.Is) and say which file and byte offset they concern.
var (
	// ErrTruncated: the file ends before its trailer. Its writer was stopped
	// before Commit (Commit never renames such a file into place), or the
	// file was copied or restored incompletely. Use the previous snapshot
	// (OpenLatest does).
	ErrTruncated = errors.New("state: snapshot truncated")

	// ErrCorrupt: the file is not a snapshot (bad magic), or a checksum,
	// length or record count does not match. It was damaged on disk or in
	// transit; it must not be loaded. Use the previous snapshot (OpenLatest
	// does).
	ErrCorrupt = errors.New("state: snapshot corrupt")

	// ErrSchemaTooNew: the snapshot's schema version is newer than the reader
	// knows (see MaxSchema). The error is a *SchemaError.
	ErrSchemaTooNew = errors.New("state: snapshot schema too new")

	// ErrFormatTooNew: the file was written by a newer version of this
	// package, in a file format this reader cannot parse.
	ErrFormatTooNew = errors.New("state: snapshot format too new")

	// ErrRecordTooLarge: Writer.Write was given a record over MaxRecordSize.
	ErrRecordTooLarge = errors.New("state: record too large")
)

// SchemaError reports a snapshot whose application schema version is newer
// than the reader's MaxSchema. It unwraps to ErrSchemaTooNew. OpenLatest does
// not fall back to the previous snapshot on this error: the newer snapshot is
// intact, and loading an older one instead would silently lose what was saved
// since.
type SchemaError struct {
	Path       string // the snapshot file
	Schema     uint32 // the schema the snapshot was written with
	Max        uint32 // the newest schema the reader knows
	AppVersion string // the version of the application that wrote it
}

func (e *SchemaError) Error() string {
	by := "a newer build"
	if e.AppVersion != "" {
		by = fmt.Sprintf("a newer build (%s)", e.AppVersion)
	}
	return fmt.Sprintf("state: %s: snapshot schema %d is newer than this build knows (%d): "+
		"written by %s: run that build or a newer one, or restore a snapshot of schema %d or older",
		e.Path, e.Schema, e.Max, by, e.Max)
}

// Unwrap returns ErrSchemaTooNew.
func (e *SchemaError) Unwrap() error { return ErrSchemaTooNew }

// Hints appended to the errors above, where the user can act.
const (
	hintPrevious = "use the previous snapshot (state.OpenLatest falls back to it)"
	hintDiscard  = "discard the records read from it"
	hintNone     = "no good snapshot is left: restore one from a backup, or remove the files to start empty"
	hintNewer    = "written by a newer build: run that build or a newer one"
)

// truncated returns an ErrTruncated for the file at path.
func truncated(path string, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrTruncated, path, fmt.Sprintf(format, args...))
}

// corrupt returns an ErrCorrupt for the file at path.
func corrupt(path string, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrCorrupt, path, fmt.Sprintf(format, args...))
}

// withHint appends hint to err if err means the file is truncated or corrupt.
func withHint(err error, hint string) error {
	if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrCorrupt) {
		return err
	}
	return fmt.Errorf("%w: %s", err, hint)
}

// isDamaged reports whether err means the file cannot be trusted, so that a
// fallback to the previous snapshot is right: missing, truncated or corrupt.
func isDamaged(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrTruncated) || errors.Is(err, ErrCorrupt)
}
