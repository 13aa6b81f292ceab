package state

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// PrevSuffix is appended to a snapshot's path to name the previous snapshot,
// kept until a reader confirms the current one.
const PrevSuffix = ".prev"

// tempSuffix, then a random string, names a snapshot being written.
const tempSuffix = ".tmp-"

// A tempFile is a snapshot being written. Its writer holds an exclusive
// flock(2) on it until it is renamed into place or removed; the kernel
// releases the lock when the writer dies, even by SIGKILL, which is how
// removeStaleTemps tells an abandoned file from one still being written.
type tempFile struct {
	f    *os.File
	name string
}

// createTemp creates and locks a new temporary file for the snapshot at path.
func createTemp(path string) (*tempFile, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	for range 10 {
		f, err := os.CreateTemp(dir, base+tempSuffix+"*")
		if err != nil {
			return nil, fmt.Errorf("state: creating a snapshot next to %s: %w", path, err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			os.Remove(f.Name())
			return nil, fmt.Errorf("state: locking %s: %w", f.Name(), err)
		}
		// A concurrent removeStaleTemps may have taken it for abandoned
		// between its creation and the lock, and removed it.
		if fi, err := f.Stat(); err == nil && stillNamed(f.Name(), fi) {
			return &tempFile{f: f, name: f.Name()}, nil
		}
		f.Close()
	}
	return nil, fmt.Errorf("state: creating a snapshot next to %s: temporary files keep disappearing", path)
}

// stillNamed reports whether name still refers to the file fi describes.
func stillNamed(name string, fi fs.FileInfo) bool {
	cur, err := os.Stat(name)
	return err == nil && os.SameFile(cur, fi)
}

// removeStaleTemps removes the temporary files of path whose writers died
// (see tempFile). It is best effort: a file it cannot remove is left.
func removeStaleTemps(path string) {
	names, _ := filepath.Glob(globEscape(path) + tempSuffix + "*")
	for _, name := range names {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			if fi, err := f.Stat(); err == nil && stillNamed(name, fi) {
				os.Remove(name)
			}
		}
		f.Close()
	}
}

// globEscape quotes the characters filepath.Match treats specially.
func globEscape(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', '\\':
			out = append(out, '\\')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func (t *tempFile) sync() error {
	if err := t.f.Sync(); err != nil {
		return fmt.Errorf("state: syncing %s: %w", t.name, err)
	}
	return nil
}

// close releases the lock with the file; call it once the file is renamed.
func (t *tempFile) close() error {
	if err := t.f.Close(); err != nil {
		return fmt.Errorf("state: closing %s: %w", t.name, err)
	}
	return nil
}

// remove deletes the file, then closes it (releasing the lock only then).
func (t *tempFile) remove() error {
	err := os.Remove(t.name)
	t.f.Close()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("state: removing %s: %w", t.name, err)
	}
	return nil
}

// install renames the synced temporary file over path, keeping the snapshot
// that was there as path.prev unless path.prev exists already, and syncs
// the directory after each step.
func install(t *tempFile, path string) error {
	d, err := lockDir(path)
	if err != nil {
		return err
	}
	defer d.Close()
	err = os.Link(path, path+PrevSuffix)
	switch {
	case err == nil:
		if err := syncDir(d); err != nil {
			return err
		}
	case errors.Is(err, fs.ErrExist): // the previous one is still unconfirmed: keep the older, confirmed one
	case errors.Is(err, fs.ErrNotExist): // the first snapshot
	default:
		return fmt.Errorf("state: keeping the previous snapshot: %w", err)
	}
	if err := os.Rename(t.name, path); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return syncDir(d)
}

// lockDir opens the directory of path and takes an exclusive flock(2) on it,
// which serialises the renames of Commit and Confirm across processes. Close
// the file to unlock.
func lockDir(path string) (*os.File, error) {
	dir := filepath.Dir(path)
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("state: opening the snapshot directory: %w", err)
	}
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		d.Close()
		return nil, fmt.Errorf("state: locking %s: %w", dir, err)
	}
	return d, nil
}

// syncDir makes the renames and links in directory d durable.
func syncDir(d *os.File) error {
	if err := d.Sync(); err != nil {
		return fmt.Errorf("state: syncing directory %s: %w", d.Name(), err)
	}
	return nil
}
