package shm

import (
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A Region is a mapped table of fixed-size records. Its methods are not safe
// for concurrent use: the caller serialises them (see the package doc).
type Region struct {
	f        *os.File
	mem      []byte // the whole mapping
	log      []byte // the redo log, within mem
	recs     []byte // the records, within mem
	layout   Layout
	tx       Tx
	inTx     bool
	replayed bool // Open replayed a committed transaction
	viewOnly bool // View: another process may still write; Update refused until TakeOver
}

// Create makes a new region of layout l in a memfd called name (as it
// appears in /proc/PID/fd), with no records in use and generation 1. The
// memfd is sealed against shrinking, so that no holder can truncate the
// records under another's mapping.
func Create(name string, l Layout) (*Region, error) {
	if err := l.validate(); err != nil {
		return nil, err
	}
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("shm: memfd_create %q: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), "memfd:"+name)
	if err := unix.Ftruncate(fd, int64(l.size())); err != nil {
		f.Close()
		return nil, fmt.Errorf("shm: sizing %s to %d bytes: %w", f.Name(), l.size(), err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK); err != nil {
		f.Close()
		return nil, fmt.Errorf("shm: sealing %s: %w", f.Name(), err)
	}
	r, err := mapRegion(f, l)
	if err != nil {
		f.Close()
		return nil, err
	}
	putHeader(r.mem, l)
	r.store(r.mem, hdrGen, 1)
	return r, nil
}

// Open maps the region in f, which must have layout l (with l.Capacity 0,
// any capacity), completes or discards the transaction a crashed writer left
// in its redo log, and increments its generation. Open maps a duplicate of f:
// the caller may close f.
func Open(f *os.File, l Layout) (*Region, error) {
	r, err := View(f, l)
	if err != nil {
		return nil, err
	}
	r.viewOnly = false
	if err := r.takeOver(); err != nil {
		r.Close()
		return nil, fmt.Errorf("%w (file %s)", err, f.Name())
	}
	return r, nil
}

// View maps the region at f, checked as Open checks it, to read while the
// process that writes it still does: a successor that prepares (indexes the
// records) before it takes over. Nothing is written: a transaction in
// flight is neither replayed nor discarded, and a record being changed
// may be read half old, half new, so the reader must read again whatever
// changed meanwhile (the application knows what: a journal of its own).
// Update fails on a view until TakeOver.
func View(f *os.File, l Layout) (*Region, error) {
	have, err := ReadLayout(f)
	if err != nil {
		return nil, err
	}
	if !l.matches(have) {
		return nil, &LayoutError{Have: have, Want: l}
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("shm: %w", err)
	}
	if fi.Size() < int64(have.size()) {
		return nil, fmt.Errorf("%w: %d bytes, %v needs %d (file %s)", ErrSize, fi.Size(), have, have.size(), f.Name())
	}
	dup, err := dupFile(f)
	if err != nil {
		return nil, err
	}
	r, err := mapRegion(dup, have)
	if err != nil {
		dup.Close()
		return nil, err
	}
	r.viewOnly = true
	return r, nil
}

// TakeOver makes a view the region's writer, once the process that wrote
// it has stopped (or died): as Open, it replays a transaction committed and
// not applied, and increments the generation. The mapping, and the pages
// the view already read, are kept.
func (r *Region) TakeOver() error {
	if r.mem == nil {
		return ErrClosed
	}
	if !r.viewOnly {
		return nil
	}
	if err := r.takeOver(); err != nil {
		return fmt.Errorf("%w (file %s)", err, r.f.Name())
	}
	r.viewOnly = false
	return nil
}

// takeOver makes r the writer: a transaction committed but not applied is
// replayed, and the generation incremented.
func (r *Region) takeOver() error {
	if err := r.recover(); err != nil {
		return err
	}
	r.commit(0, r.Len(), r.Generation()+1)
	return nil
}

// dupFile returns a duplicate of f's descriptor (close-on-exec), without
// f.Fd(), which would switch f to blocking mode.
func dupFile(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("shm: %w", err)
	}
	var fd int
	var dupErr error
	if err := rc.Control(func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, fmt.Errorf("shm: %w", err)
	}
	if dupErr != nil {
		return nil, fmt.Errorf("shm: dup %s: %w", f.Name(), dupErr)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// mapRegion maps f, whose size the caller checked, as a region of layout l.
func mapRegion(f *os.File, l Layout) (*Region, error) {
	var mem []byte
	var mapErr error
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("shm: %w", err)
	}
	err = rc.Control(func(fd uintptr) {
		mem, mapErr = unix.Mmap(int(fd), 0, l.size(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	})
	if err == nil {
		err = mapErr
	}
	if err != nil {
		return nil, fmt.Errorf("shm: mmap %s: %w", f.Name(), err)
	}
	logEnd := page + l.logSize()
	return &Region{
		f:      f,
		mem:    mem,
		log:    mem[page:logEnd],
		recs:   mem[logEnd : logEnd+l.Capacity*l.RecordSize],
		layout: l,
	}, nil
}

// Close unmaps the region and closes its descriptor; the region must not be
// used afterwards. The memory lives on while another descriptor of it is
// open (the supervisor's fd store).
func (r *Region) Close() error {
	if r.mem == nil {
		return nil
	}
	err := unix.Munmap(r.mem)
	r.mem, r.log, r.recs = nil, nil, nil
	if cerr := r.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// File is the region's memfd, to pass to the supervisor's fd store or to a
// child. It is valid until Close.
func (r *Region) File() *os.File { return r.f }

// Layout is the region's layout, with its capacity.
func (r *Region) Layout() Layout { return r.layout }

// Len is the number of records in use: Record(0) to Record(Len()-1).
func (r *Region) Len() int { return int(r.load(r.mem, hdrCount)) }

// Generation is incremented by each Open: a worker that opens a region sees
// a larger number than whoever had it before.
func (r *Region) Generation() uint64 { return r.load(r.mem, hdrGen) }

// Record is the bytes of record i, a slice into the mapping: read it, but
// change it only with Update. It panics if i is not in [0, Len()).
func (r *Region) Record(i int) []byte {
	if i < 0 || i >= r.Len() {
		panic(fmt.Sprintf("shm: Record(%d) of %d records", i, r.Len()))
	}
	return r.record(i)
}

func (r *Region) record(i int) []byte {
	n := r.layout.RecordSize
	return r.recs[i*n : (i+1)*n : (i+1)*n]
}

// load and store access the 8-byte aligned uint64 at b[off] atomically.
func (r *Region) load(b []byte, off int) uint64 {
	return atomic.LoadUint64((*uint64)(unsafe.Pointer(&b[off])))
}

func (r *Region) store(b []byte, off int, v uint64) {
	atomic.StoreUint64((*uint64)(unsafe.Pointer(&b[off])), v)
}

// Prefault maps the pages of records [from, to) into this process now
// (madvise MADV_POPULATE_READ), so that reading them later takes no page
// fault: a successor calls it on what it will read inside a blackout. A
// kernel without it (before Linux 5.14) makes it a no-op.
func (r *Region) Prefault(from, to int) error {
	if r.mem == nil {
		return ErrClosed
	}
	from, to = max(from, 0), min(to, r.layout.Capacity)
	if from >= to {
		return nil
	}
	n := r.layout.RecordSize
	lo := from * n &^ (page - 1)
	b := r.recs[lo : to*n]
	if err := unix.Madvise(b, unix.MADV_POPULATE_READ); err != nil && err != unix.EINVAL {
		return fmt.Errorf("shm: prefault: %w", err)
	}
	return nil
}
