package shm

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

// Limits of a Layout.
const (
	MaxNameLen    = 32      // bytes of Layout.Name
	MaxRecordSize = 1 << 16 // bytes of one record
	MaxCapacity   = 1 << 32 // records of one region
	maxRecords    = 1 << 40 // bytes of all records
)

// A Layout is the shape of a region's records. It is stored in the region's
// header, and Open refuses a region whose layout differs from the caller's.
type Layout struct {
	Name       string // what the records are ("accounts"), 1 to MaxNameLen bytes
	Version    uint32 // the records' encoding; bump it when it changes
	RecordSize int    // bytes per record, 1 to MaxRecordSize
	Capacity   int    // records, 1 to MaxCapacity; 0 in Open: as stored
}

func (l Layout) String() string {
	if l.Capacity == 0 {
		return fmt.Sprintf("%q version %d (records of %d bytes)", l.Name, l.Version, l.RecordSize)
	}
	return fmt.Sprintf("%q version %d (%d records of %d bytes)", l.Name, l.Version, l.Capacity, l.RecordSize)
}

func (l Layout) validate() error {
	switch {
	case l.Name == "" || len(l.Name) > MaxNameLen:
		return fmt.Errorf("%w: name %q is not 1 to %d bytes", ErrInvalidLayout, l.Name, MaxNameLen)
	case l.RecordSize < 1 || l.RecordSize > MaxRecordSize:
		return fmt.Errorf("%w: record size %d is not 1 to %d", ErrInvalidLayout, l.RecordSize, MaxRecordSize)
	case l.Capacity < 1 || l.Capacity > MaxCapacity || l.Capacity*l.RecordSize > maxRecords:
		return fmt.Errorf("%w: capacity %d is not 1 to %d (and %d bytes in all)",
			ErrInvalidLayout, l.Capacity, MaxCapacity, maxRecords)
	}
	return nil
}

// matches reports whether a region of layout have can be opened as want.
func (want Layout) matches(have Layout) bool {
	return have.Name == want.Name && have.Version == want.Version && have.RecordSize == want.RecordSize &&
		(want.Capacity == 0 || want.Capacity == have.Capacity)
}

// The region: a header page, the redo log, the records, each starting on a
// page. All integers are little-endian.
const (
	page  = 4096
	magic = "PSWSHM\x00\x01" // the last byte is the format's version

	// The header. Bytes [0, hdrCRC) are static, checksummed at hdrCRC.
	hdrVersion  = 8   // uint32 Layout.Version
	hdrRecSize  = 12  // uint32 Layout.RecordSize
	hdrCapacity = 16  // uint64 Layout.Capacity
	hdrNameLen  = 24  // uint32 len(Layout.Name)
	hdrName     = 32  // [MaxNameLen]byte Layout.Name
	hdrCRC      = 64  // uint32 CRC-32C of bytes [0, hdrCRC)
	hdrCount    = 128 // uint64 records in use, written by the commit protocol
	hdrGen      = 136 // uint64 generation, written by the commit protocol
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// slotSize is the bytes of one log slot: a record's index and its image,
// padded to 8 bytes.
func (l Layout) slotSize() int { return 8 + (l.RecordSize+7)&^7 }

func (l Layout) logSize() int { return roundPage(logSlots + MaxTxRecords*l.slotSize()) }

// size is the bytes of a region of layout l.
func (l Layout) size() int { return page + l.logSize() + roundPage(l.Capacity*l.RecordSize) }

func roundPage(n int) int { return (n + page - 1) &^ (page - 1) }

// putHeader writes l's static header into h.
func putHeader(h []byte, l Layout) {
	le := binary.LittleEndian
	copy(h, magic)
	le.PutUint32(h[hdrVersion:], l.Version)
	le.PutUint32(h[hdrRecSize:], uint32(l.RecordSize))
	le.PutUint64(h[hdrCapacity:], uint64(l.Capacity))
	le.PutUint32(h[hdrNameLen:], uint32(len(l.Name)))
	copy(h[hdrName:hdrName+MaxNameLen], l.Name)
	le.PutUint32(h[hdrCRC:], crc32.Checksum(h[:hdrCRC], castagnoli))
}

// parseHeader checks the static header in h and returns its layout.
func parseHeader(h []byte) (Layout, error) {
	le := binary.LittleEndian
	if len(h) < len(magic) || string(h[:len(magic)]) != magic {
		return Layout{}, ErrNotRegion
	}
	if len(h) < page {
		return Layout{}, fmt.Errorf("%w: %d bytes, not even a header", ErrSize, len(h))
	}
	if sum := crc32.Checksum(h[:hdrCRC], castagnoli); sum != le.Uint32(h[hdrCRC:]) {
		return Layout{}, fmt.Errorf("%w: header checksum %08x, want %08x (torn or scribbled header)",
			ErrDamaged, sum, le.Uint32(h[hdrCRC:]))
	}
	n := le.Uint32(h[hdrNameLen:])
	capacity := le.Uint64(h[hdrCapacity:])
	if n > MaxNameLen || capacity > MaxCapacity {
		return Layout{}, fmt.Errorf("%w: header fields out of range", ErrDamaged)
	}
	l := Layout{
		Name:       string(h[hdrName : hdrName+n]),
		Version:    le.Uint32(h[hdrVersion:]),
		RecordSize: int(le.Uint32(h[hdrRecSize:])),
		Capacity:   int(capacity),
	}
	if err := l.validate(); err != nil {
		return Layout{}, fmt.Errorf("%w: header fields out of range: %v", ErrDamaged, err)
	}
	return l, nil
}

// ReadLayout returns the layout in the header of the region in f, checking
// its magic and checksum but not the caller's layout: the way to learn which
// layout to open an old region with before migrating it.
func ReadLayout(f *os.File) (Layout, error) {
	h := make([]byte, page)
	n, err := f.ReadAt(h, 0)
	if err != nil && err != io.EOF {
		return Layout{}, fmt.Errorf("shm: reading the header of %s: %w", f.Name(), err)
	}
	l, err := parseHeader(h[:n])
	if err != nil {
		return Layout{}, fmt.Errorf("%w (file %s)", err, f.Name())
	}
	return l, nil
}
