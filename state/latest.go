package state

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// OpenLatest opens the snapshot at path, or, if that is missing, truncated
// or corrupt, the previous one at path+PrevSuffix. The Reader's Path says
// which it opened and its Refused why path was refused, so the application
// can log, for example, "snapshot refused: ...; using the previous one,
// saved 5m ago" (see Header().Created).
//
// Errors: if neither file exists, one that wraps fs.ErrNotExist (a first
// start: begin with empty state). If path is damaged and no previous
// snapshot exists, path's error. If both are unusable, an error wrapping
// both. A schema newer than MaxSchema (*SchemaError) or a newer file format
// is returned without falling back: that snapshot is intact, and loading an
// older one instead would silently lose what was saved since.
func OpenLatest(path string, opts ...Option) (*Reader, error) {
	r, err := open(path, opts)
	if err == nil || !isDamaged(err) {
		return r, err
	}
	prev, perr := open(path+PrevSuffix, opts)
	switch {
	case perr == nil:
		prev.base, prev.refused = path, err
		return prev, nil
	case errors.Is(err, fs.ErrNotExist) && errors.Is(perr, fs.ErrNotExist):
		return nil, err // a first start
	case errors.Is(perr, fs.ErrNotExist):
		return nil, fmt.Errorf("%w; there is no previous snapshot: %s", err, hintNone)
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("state: %s is missing, and the previous snapshot is unusable: %w: %s", path, perr, hintNone)
	}
	return nil, fmt.Errorf("%w; the previous snapshot is unusable too: %w: %s", err, perr, hintNone)
}

// Confirm records that the application has restored from this snapshot, so
// that the previous one is no longer needed as a fallback: it removes
// path.prev. Call it after Next returned io.EOF, once the restored state is
// in use (before that, Confirm returns an error). It may be called after
// Close.
//
// Confirm removes nothing when the Reader read path.prev (OpenLatest fell
// back): that file is then the only good snapshot, and the next Commit
// replaces the damaged one and keeps it. Nor when path has been replaced
// since it was opened: the newer snapshot has not been read back yet.
func (r *Reader) Confirm() error {
	if r.err != io.EOF {
		return fmt.Errorf("state: confirming %s before it was read to the end", r.path)
	}
	if r.path != r.base || r.fi == nil {
		return nil
	}
	d, err := lockDir(r.base)
	if err != nil {
		return err
	}
	defer d.Close()
	if !stillNamed(r.base, r.fi) {
		return nil
	}
	err = os.Remove(r.base + PrevSuffix)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("state: removing the previous snapshot: %w", err)
	}
	return syncDir(d)
}
