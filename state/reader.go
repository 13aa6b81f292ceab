package state

import (
	"bufio"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
)

// readBufferSize bounds the Reader's buffer; a smaller file gets a buffer of
// its own size.
const readBufferSize = 64 << 10

// An Option adjusts how a snapshot is opened.
type Option func(*options)

type options struct {
	maxSchema uint32
	limited   bool // maxSchema was given
}

// MaxSchema makes a reader refuse, with a *SchemaError, a snapshot whose
// schema is newer than n: the newest the application can decode or migrate.
// Without it any schema is accepted, and the application must check
// Header().Schema itself.
func MaxSchema(n uint32) Option {
	return func(o *options) { o.maxSchema, o.limited = n, true }
}

// A Reader reads the records of one snapshot in order. Open and OpenLatest
// verify the whole file's checksum before they return it, and Next verifies
// the record count and the checksum again as it reaches the end. A Reader is
// not safe for concurrent use.
type Reader struct {
	path    string // the file read: base, or base+PrevSuffix
	base    string // the snapshot's path, as given to Open or OpenLatest
	refused error  // why OpenLatest refused base, when it read base.prev
	f       *os.File
	fi      fs.FileInfo

	br    *bufio.Reader
	h     Header
	size  int64  // of the file: the reader never reads, nor allocates, past it
	pos   int64  // bytes consumed
	crc   uint32 // of the bytes consumed
	total trailer
	buf   []byte  // the last record; reused
	err   error   // sticky; io.EOF once the trailer is verified
	len   [4]byte // a record's length field; here, so that it is not allocated per record

	allocated int64 // bytes of record buffers allocated (for tests)
}

// Open opens the snapshot at path and reads its header. It first reads the
// whole file once to verify its checksum, so a truncated or damaged file is
// refused here (ErrTruncated, ErrCorrupt) and no record of it reaches the
// application. A schema newer than MaxSchema gives a *SchemaError.
func Open(path string, opts ...Option) (*Reader, error) {
	r, err := open(path, opts)
	return r, withHint(err, hintPrevious)
}

// open is Open without the hint, for OpenLatest to give its own.
func open(path string, opts []Option) (*Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	r, err := openFile(path, f, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

func openFile(path string, f *os.File, opts []Option) (*Reader, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("state: %s is not a regular file", path)
	}
	if err := verify(path, f, fi.Size()); err != nil {
		return nil, err
	}
	r, err := newReader(path, io.NewSectionReader(f, 0, fi.Size()), fi.Size(), opts)
	if err != nil {
		return nil, err
	}
	r.f, r.fi = f, fi
	return r, nil
}

// newReader reads the header from src, which holds exactly size bytes.
func newReader(path string, src io.Reader, size int64, opts []Option) (*Reader, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	r := &Reader{
		path: path,
		base: path,
		br:   bufio.NewReaderSize(src, int(min(size, readBufferSize))),
		size: size,
	}
	if err := r.readHeader(); err != nil {
		return nil, err
	}
	if o.limited && r.h.Schema > o.maxSchema {
		return nil, &SchemaError{Path: path, Schema: r.h.Schema, Max: o.maxSchema, AppVersion: r.h.AppVersion}
	}
	return r, nil
}

func (r *Reader) readHeader() error {
	var prefix [prefixLen]byte
	if err := r.read(prefix[:], "the header"); err != nil {
		return err
	}
	n, err := headerLen(r.path, prefix[:])
	if err != nil {
		return err
	}
	if int64(n) > r.size {
		return truncated(r.path, "the header is %d bytes, the file %d", n, r.size)
	}
	b := append(make([]byte, 0, n), prefix[:]...)[:n]
	if err := r.read(b[prefixLen:], "the header"); err != nil {
		return err
	}
	r.h, err = parseHeader(r.path, b)
	return err
}

// Header returns the snapshot's header: its schema, the version of the
// application that wrote it, and when.
func (r *Reader) Header() Header { return r.h }

// Path returns the file the Reader reads: the path given to Open, or, when
// OpenLatest fell back, that path with PrevSuffix.
func (r *Reader) Path() string { return r.path }

// Refused returns why OpenLatest refused the current snapshot and read the
// previous one instead, and nil when it read the current one.
func (r *Reader) Refused() error { return r.refused }

// Next returns the next record. After the last one it verifies the trailer
// (the record count, the payload length and the checksum of the whole file)
// and returns io.EOF only if they match; otherwise ErrTruncated or
// ErrCorrupt, and the application must discard what it read. The returned
// slice is valid until the next call: copy it to keep it.
func (r *Reader) Next() ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	rec, err := r.next()
	if err != nil {
		err = withHint(err, hintDiscard)
		r.err = err
		return nil, err
	}
	return rec, nil
}

func (r *Reader) next() ([]byte, error) {
	if err := r.read(r.len[:], "a record length"); err != nil {
		return nil, err
	}
	n := le.Uint32(r.len[:])
	if n == endMarker {
		return nil, r.readTrailer()
	}
	if n > MaxRecordSize {
		return nil, corrupt(r.path, "record %d at byte %d claims %d bytes, over the limit of %d",
			r.total.count, r.pos-4, n, MaxRecordSize)
	}
	if left := r.size - r.pos - trailerLen; int64(n) > left {
		return nil, truncated(r.path, "record %d at byte %d claims %d bytes, the file has %d left",
			r.total.count, r.pos-4, n, max(left, 0))
	}
	if int(n) > cap(r.buf) {
		r.buf = make([]byte, n)
		r.allocated += int64(n)
	}
	r.buf = r.buf[:n]
	if err := r.read(r.buf, "a record"); err != nil {
		return nil, err
	}
	r.total.count++
	r.total.payload += 4 + uint64(n)
	return r.buf, nil
}

// readTrailer checks the totals and checksum after the end marker, and that
// nothing follows them.
func (r *Reader) readTrailer() error {
	var b [trailerLen]byte
	le.PutUint32(b[:], endMarker)
	if err := r.read(b[4:trailerLen-4], "the trailer"); err != nil {
		return err
	}
	sum := r.crc
	if _, err := io.ReadFull(r.br, b[trailerLen-4:]); err != nil {
		return truncated(r.path, "the checksum is missing")
	}
	r.pos += 4
	t, _ := parseTrailer(b[:])
	switch {
	case t.count != r.total.count:
		return corrupt(r.path, "%d records, the trailer says %d", r.total.count, t.count)
	case t.payload != r.total.payload:
		return corrupt(r.path, "%d bytes of records, the trailer says %d", r.total.payload, t.payload)
	case t.sum != sum:
		return corrupt(r.path, "checksum %08x, the trailer says %08x", sum, t.sum)
	case r.pos != r.size:
		return corrupt(r.path, "%d bytes follow the trailer", r.size-r.pos)
	}
	return io.EOF
}

// read fills b from the file, adding it to the checksum; what names the part
// being read, for the error.
func (r *Reader) read(b []byte, what string) error {
	n, err := io.ReadFull(r.br, b)
	r.crc = crc32.Update(r.crc, castagnoli, b[:n])
	r.pos += int64(n)
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return truncated(r.path, "at byte %d, in %s", r.pos, what)
	case err != nil:
		return fmt.Errorf("state: reading %s: %w", r.path, err)
	}
	return nil
}

// Close closes the file. It does not confirm the snapshot.
func (r *Reader) Close() error {
	if r.err == nil {
		r.err = fmt.Errorf("state: reading %s: %w", r.path, fs.ErrClosed)
	}
	if r.f == nil {
		return nil
	}
	f := r.f
	r.f = nil
	return f.Close()
}
