package shm

import "fmt"

// Migrate creates a region of layout to in a memfd called name, and fills it
// with the records of old, in order: convert(oldRecord, newRecord) encodes
// each one into the new record, which starts zeroed. old is only read, so
// that a rollback to the build that knows its layout still finds it intact.
// The new region continues old's generations.
func Migrate(old *Region, to Layout, name string, convert func(old, new []byte) error) (*Region, error) {
	if old.mem == nil {
		return nil, ErrClosed
	}
	if err := to.validate(); err != nil {
		return nil, err
	}
	n := old.Len()
	if n > to.Capacity {
		return nil, fmt.Errorf("%w: migrating %d records of %v to %v", ErrFull, n, old.layout, to)
	}
	r, err := Create(name, to)
	if err != nil {
		return nil, err
	}
	for i := range n {
		if err := convert(old.record(i), r.record(i)); err != nil {
			r.Close()
			return nil, fmt.Errorf("shm: migrating record %d of %v to %v: %w", i, old.layout, to, err)
		}
	}
	// Nobody else has the new region yet: no need for the redo log.
	r.store(r.mem, hdrCount, uint64(n))
	r.store(r.mem, hdrGen, old.Generation()+1)
	return r, nil
}
