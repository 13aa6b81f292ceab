package shm

import (
	"errors"
	"fmt"
)

// Errors a region can fail with. Errors returned by this package wrap one of
// them (test with errors.Is) and say what they concern.
var (
	// ErrNotRegion: the file does not start with the region's magic. It is
	// not a region of this package (a wrong fd from the store?).
	ErrNotRegion = errors.New("shm: not a region (bad magic)")

	// ErrSize: the file is shorter than its header says. It was truncated
	// by someone else; the records are lost. Restore from the snapshot file.
	ErrSize = errors.New("shm: region shorter than its header says")

	// ErrDamaged: the header's checksum does not match, a header field is
	// out of range, or the redo log is inconsistent. The region was
	// scribbled on; do not use it. Restore from the snapshot file.
	ErrDamaged = errors.New("shm: region damaged")

	// ErrLayoutMismatch: the region's layout (name, version or record size,
	// or capacity if the caller gave one) is not the one the caller expects.
	// The error is a *LayoutError. Open the region with its own layout (see
	// ReadLayout) and Migrate it to the new one.
	ErrLayoutMismatch = errors.New("shm: layout mismatch")

	// ErrInvalidLayout: a Layout given to Create or Migrate is out of range
	// (see Layout).
	ErrInvalidLayout = errors.New("shm: invalid layout")

	// ErrTxTooLarge: a transaction staged more than MaxTxRecords records.
	// Split the change into several Updates, each of which leaves the
	// records consistent.
	ErrTxTooLarge = errors.New("shm: too many records in one transaction")

	// ErrFull: every record of the region's capacity is in use. Migrate to a
	// layout with a larger capacity.
	ErrFull = errors.New("shm: region full")

	// ErrView: an Update on a region mapped by View, before TakeOver.
	ErrView = errors.New("shm: a view: TakeOver first")

	// ErrClosed: the region was closed.
	ErrClosed = errors.New("shm: region closed")
)

// A LayoutError is returned by Open when the region's layout is not the
// caller's. It unwraps to ErrLayoutMismatch.
type LayoutError struct {
	Have Layout // the region's layout, as its header says
	Want Layout // the layout the caller asked for
}

func (e *LayoutError) Error() string {
	return fmt.Sprintf("shm: layout mismatch: the region is %v, the caller wants %v: open it as %q version %d and Migrate",
		e.Have, e.Want, e.Have.Name, e.Have.Version)
}

func (e *LayoutError) Unwrap() error { return ErrLayoutMismatch }
