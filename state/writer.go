package state

import (
	"bufio"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"time"
)

// writeBufferSize is the Writer's buffer: records are written to the file,
// and checksummed, in chunks of this size.
const writeBufferSize = 256 << 10

// A Writer writes one snapshot, record by record, to a temporary file next to
// its destination. Commit puts it in place; until then the destination is
// untouched. A Writer is not safe for concurrent use.
type Writer struct {
	path  string
	tmp   *tempFile
	sum   *summer       // checksums what reaches the file
	bw    *bufio.Writer // over sum
	total trailer
	err   error   // sticky: the first failure, or errWriterDone
	len   [4]byte // a record's length field; here, so that it is not allocated per record
}

var errWriterDone = fmt.Errorf("state: writer already committed or aborted: %w", fs.ErrClosed)

// Create begins a snapshot that Commit will put at path. The records are
// written to a new temporary file in the same directory (named path.tmp-*,
// mode 0600), so a crash before Commit leaves path as it was. Temporary files
// that such a crash left behind are removed here, unless their writer is still
// running.
//
// The header's Created, when zero, is set to now.
func Create(path string, h Header) (*Writer, error) {
	if err := checkHeader(h); err != nil {
		return nil, err
	}
	if h.Created.IsZero() {
		h.Created = time.Now()
	}
	removeStaleTemps(path)
	tmp, err := createTemp(path)
	if err != nil {
		return nil, err
	}
	sum := &summer{f: tmp.f}
	w := &Writer{path: path, tmp: tmp, sum: sum, bw: bufio.NewWriterSize(sum, writeBufferSize)}
	if _, err := w.bw.Write(appendHeader(nil, h)); err != nil {
		w.Abort()
		return nil, fmt.Errorf("state: writing %s: %w", tmp.name, err)
	}
	return w, nil
}

// Write appends one record: an opaque byte string the application encodes,
// such as one player, of at most MaxRecordSize bytes. The record is buffered;
// the caller may reuse it when Write returns. After an I/O error, every
// further Write and Commit fails (and Commit removes the temporary file); a
// record over the limit is refused on its own.
func (w *Writer) Write(record []byte) error {
	if w.err != nil {
		return w.err
	}
	if len(record) > MaxRecordSize {
		return fmt.Errorf("%w: %d bytes, the limit is %d: split it into several records",
			ErrRecordTooLarge, len(record), MaxRecordSize)
	}
	le.PutUint32(w.len[:], uint32(len(record)))
	w.bw.Write(w.len[:])
	if _, err := w.bw.Write(record); err != nil {
		w.err = fmt.Errorf("state: writing %s: %w", w.tmp.name, err)
		return w.err
	}
	w.total.count++
	w.total.payload += uint64(4 + len(record))
	return nil
}

// Commit completes the snapshot and puts it at path, atomically and durably:
// it writes the trailer, syncs the file, and renames it over path. The
// snapshot that was at path is kept as path.prev (see the package doc), so
// that a reader can fall back to it until one confirms the new one. On error
// the temporary file is removed, and path holds the old snapshot (or the new
// one, when only the final sync of the directory failed).
func (w *Writer) Commit() error {
	if err := w.err; err != nil {
		w.Abort()
		return err
	}
	err := w.finish()
	if err == nil {
		err = w.tmp.sync()
	}
	if err == nil {
		err = install(w.tmp, w.path)
	}
	if err != nil {
		err = errors.Join(err, w.tmp.remove())
		w.err = errWriterDone
		return err
	}
	w.err = errWriterDone
	return w.tmp.close()
}

// finish writes the trailer: the totals, then the CRC of all before it.
func (w *Writer) finish() error {
	w.bw.Write(appendTrailer(nil, w.total))
	if err := w.bw.Flush(); err != nil {
		return fmt.Errorf("state: writing %s: %w", w.tmp.name, err)
	}
	if _, err := w.tmp.f.Write(le.AppendUint32(nil, w.sum.crc)); err != nil {
		return fmt.Errorf("state: writing %s: %w", w.tmp.name, err)
	}
	return nil
}

// Abort discards the snapshot: the temporary file is removed and path is
// left as it was. After Commit, Abort does nothing, so it can be deferred.
func (w *Writer) Abort() error {
	if w.err == errWriterDone {
		return nil
	}
	w.err = errWriterDone
	return w.tmp.remove()
}

// summer computes the CRC-32C of what is written through it to f.
type summer struct {
	f   *os.File
	crc uint32
}

func (s *summer) Write(p []byte) (int, error) {
	n, err := s.f.Write(p)
	s.crc = crc32.Update(s.crc, castagnoli, p[:n])
	return n, err
}
