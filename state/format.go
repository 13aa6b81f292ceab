package state

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"time"
)

// The file format; FORMAT.md describes it byte by byte.
const (
	// FormatVersion is the version of the file format this package writes,
	// and the newest it reads.
	FormatVersion = 1

	// MaxRecordSize is the largest record a snapshot may hold: 16 MiB. It
	// bounds what a reader allocates for one record, whatever a damaged
	// length field says.
	MaxRecordSize = 16 << 20

	// MaxAppVersionLen is the longest Header.AppVersion, in bytes.
	MaxAppVersionLen = 1024
)

// magic opens every snapshot. As in PNG, the non-ASCII first byte and the
// CR LF, ^Z, LF sequence catch 7-bit channels and line-ending conversions.
const magic = "\x89PSS\r\n\x1a\n"

// Sizes of the fixed parts of a file.
const (
	prefixLen    = 12              // magic, format version, header length
	headerFixed  = 26              // prefix, schema, created, app version length
	headerMinLen = headerFixed + 4 // with an empty app version and the header CRC
	endMarker    = 0xFFFF_FFFF     // a record length that ends the records
	trailerLen   = 4 + 8 + 8 + 4   // end marker, count, payload length, CRC
	minFileLen   = headerMinLen + trailerLen
	maxHeaderLen = headerMinLen + MaxAppVersionLen
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var le = binary.LittleEndian

// Header describes a snapshot: what wrote it and when.
type Header struct {
	// Schema is the version of the application's record encoding. A
	// reader migrates records of an older schema and refuses a newer one
	// (see MaxSchema).
	Schema uint32
	// AppVersion names the build that wrote the snapshot, such as "v1.3".
	// It is for people reading logs; at most MaxAppVersionLen bytes.
	AppVersion string
	// Created is when the snapshot was begun. Zero: Create sets it to now.
	Created time.Time
}

// appendHeader appends the encoded header, ending with its CRC.
func appendHeader(b []byte, h Header) []byte {
	start := len(b)
	b = append(b, magic...)
	b = le.AppendUint16(b, FormatVersion)
	b = le.AppendUint16(b, uint16(headerMinLen+len(h.AppVersion)))
	b = le.AppendUint32(b, h.Schema)
	b = le.AppendUint64(b, uint64(h.Created.UnixNano()))
	b = le.AppendUint16(b, uint16(len(h.AppVersion)))
	b = append(b, h.AppVersion...)
	return le.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

// checkHeader validates a header given to Create.
func checkHeader(h Header) error {
	if len(h.AppVersion) > MaxAppVersionLen {
		return fmt.Errorf("state: app version is %d bytes, longer than %d", len(h.AppVersion), MaxAppVersionLen)
	}
	return nil
}

// headerLen returns the header length a file's first prefixLen bytes
// declare, after checking the magic.
func headerLen(path string, prefix []byte) (int, error) {
	if string(prefix[:len(magic)]) != magic {
		return 0, corrupt(path, "no snapshot magic at the start")
	}
	n := int(le.Uint16(prefix[10:]))
	if n < headerMinLen {
		return 0, corrupt(path, "header length %d is below the minimum %d", n, headerMinLen)
	}
	return n, nil
}

// parseHeader decodes a whole header, as headerLen measured it: the header
// CRC first, so that no field of a damaged header is believed.
func parseHeader(path string, b []byte) (Header, error) {
	end := len(b) - 4
	if sum, want := crc32.Checksum(b[:end], castagnoli), le.Uint32(b[end:]); sum != want {
		return Header{}, corrupt(path, "header checksum %08x, expected %08x", sum, want)
	}
	if v := le.Uint16(b[8:]); v != FormatVersion {
		return Header{}, fmt.Errorf("%w: %s: file format version %d, this reader knows %d: %s",
			ErrFormatTooNew, path, v, FormatVersion, hintNewer)
	}
	n := int(le.Uint16(b[24:]))
	if headerMinLen+n != len(b) {
		return Header{}, corrupt(path, "app version length %d disagrees with header length %d", n, len(b))
	}
	return Header{
		Schema:     le.Uint32(b[12:]),
		Created:    time.Unix(0, int64(le.Uint64(b[16:]))),
		AppVersion: string(b[headerFixed:end]),
	}, nil
}

// trailer is the end of a file: the totals and the CRC of all before it.
type trailer struct {
	count   uint64 // records
	payload uint64 // bytes of records, with their length prefixes
	sum     uint32 // CRC-32C of every byte of the file before it
}

// appendTrailer appends the end marker and totals, without the CRC.
func appendTrailer(b []byte, t trailer) []byte {
	b = le.AppendUint32(b, endMarker)
	b = le.AppendUint64(b, t.count)
	return le.AppendUint64(b, t.payload)
}

// parseTrailer decodes the trailerLen bytes after the end marker's start.
func parseTrailer(b []byte) (t trailer, marked bool) {
	return trailer{
		count:   le.Uint64(b[4:]),
		payload: le.Uint64(b[12:]),
		sum:     le.Uint32(b[20:]),
	}, le.Uint32(b) == endMarker
}
