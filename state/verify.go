package state

import (
	"fmt"
	"hash/crc32"
	"io"
)

// verifyChunk bounds the buffer of the checksum pass.
const verifyChunk = 256 << 10

// verify checks a whole file of size bytes without parsing its records: the
// magic, the header and its checksum, that the trailer's payload length
// accounts for the file's size, and the checksum of the whole file. Reading
// straight through in large chunks, it costs little next to the decoding of
// the records, and it lets Open refuse a damaged file before the application
// sees a record of it.
func verify(path string, ra io.ReaderAt, size int64) error {
	hlen, err := verifyPrefix(path, ra, size)
	if err != nil {
		return err
	}
	b := make([]byte, hlen)
	if err := readAt(path, ra, b, 0); err != nil {
		return err
	}
	if _, err := parseHeader(path, b); err != nil {
		return err
	}
	if size < int64(hlen)+trailerLen {
		return truncated(path, "%d bytes, too short for a trailer", size)
	}
	var tb [trailerLen]byte
	if err := readAt(path, ra, tb[:], size-trailerLen); err != nil {
		return err
	}
	t, marked := parseTrailer(tb[:])
	payload := uint64(size) - uint64(hlen) - trailerLen
	switch {
	case !marked:
		return truncated(path, "%d bytes, and no trailer at the end", size)
	case t.payload > payload:
		return truncated(path, "%d bytes of records, the trailer says %d", payload, t.payload)
	case t.payload < payload:
		return corrupt(path, "%d bytes of records, the trailer says %d", payload, t.payload)
	}
	sum, err := checksum(path, ra, size-4)
	if err != nil {
		return err
	}
	if sum != t.sum {
		return corrupt(path, "checksum %08x, the trailer says %08x", sum, t.sum)
	}
	return nil
}

// verifyPrefix checks the magic and returns the header length.
func verifyPrefix(path string, ra io.ReaderAt, size int64) (int, error) {
	if size < prefixLen {
		var b [prefixLen]byte
		if err := readAt(path, ra, b[:size], 0); err != nil {
			return 0, err
		}
		if string(b[:min(size, int64(len(magic)))]) != magic[:min(size, int64(len(magic)))] {
			return 0, corrupt(path, "no snapshot magic at the start")
		}
		return 0, truncated(path, "%d bytes, too short for a header", size)
	}
	var b [prefixLen]byte
	if err := readAt(path, ra, b[:], 0); err != nil {
		return 0, err
	}
	n, err := headerLen(path, b[:])
	if err != nil {
		return 0, err
	}
	if int64(n) > size {
		return 0, truncated(path, "the header is %d bytes, the file %d", n, size)
	}
	return n, nil
}

// checksum returns the CRC-32C of the first n bytes of ra.
func checksum(path string, ra io.ReaderAt, n int64) (uint32, error) {
	buf := make([]byte, min(n, verifyChunk))
	var sum uint32
	for off := int64(0); off < n; {
		b := buf[:min(n-off, int64(len(buf)))]
		if err := readAt(path, ra, b, off); err != nil {
			return 0, err
		}
		sum = crc32.Update(sum, castagnoli, b)
		off += int64(len(b))
	}
	return sum, nil
}

// readAt fills b from ra at off; the caller has checked that the file holds
// these bytes, so running out means it shrank meanwhile.
func readAt(path string, ra io.ReaderAt, b []byte, off int64) error {
	n, err := ra.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == io.EOF {
		return truncated(path, "at byte %d, it shrank while being read", off+int64(n))
	}
	return fmt.Errorf("state: reading %s: %w", path, err)
}
