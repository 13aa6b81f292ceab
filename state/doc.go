// Package state is the snapshot file of a stateful service: the data a
// worker saves before a handover and its successor restores, so that an
// upgrade (or a crash and restart) keeps every player's coins. It provides
// the file format, a streaming writer and reader of records, atomic and
// durable replacement, integrity checks, and the application's schema
// version, so that new code can migrate old records.
//
// # Records
//
// A snapshot is a header and a sequence of records. A record is an opaque
// byte string the application encodes, such as one player; the package
// neither knows nor cares how. Records are streamed: a million players are
// written and read one at a time, through fixed buffers, never held in
// memory together.
//
//	w, err := state.Create(path, state.Header{Schema: 2, AppVersion: "v1.3"})
//	if err != nil { ... }
//	defer w.Abort() // does nothing after Commit
//	for _, p := range players {
//		if err := w.Write(p.Encode()); err != nil { ... }
//	}
//	err = w.Commit()
//
// And to restore:
//
//	r, err := state.OpenLatest(path, state.MaxSchema(2))
//	if err != nil { ... } // errors.Is(err, fs.ErrNotExist): a first start
//	defer r.Close()
//	for {
//		rec, err := r.Next()
//		if err == io.EOF { break } // verified: the whole file is intact
//		if err != nil { ... }
//		decode(r.Header().Schema, rec) // migrating older schemas
//	}
//	err = r.Confirm() // the previous snapshot is no longer needed
//
// # The file
//
// The format is described byte by byte in FORMAT.md. In short, all integers
// little-endian:
//
//	header   magic "\x89PSS\r\n\x1a\n", format version (1), header length,
//	         schema (uint32), created (Unix ns), app version, header CRC-32C
//	records  per record: length (uint32, at most MaxRecordSize), bytes
//	trailer  0xFFFFFFFF, record count (uint64), records' length (uint64),
//	         CRC-32C (Castagnoli) of every byte before it
//
// The totals and the checksum are in a trailer because a streaming writer
// learns them only at the end.
//
// # Integrity
//
// Open reads the file once to check the header, that the trailer's lengths
// account for the file's size, and the checksum, before it returns; Next
// checks each record's length against what is left of the file and, at the
// end, the record count and the checksum again. A damaged file is therefore
// refused before any of its records reaches the application, with
// ErrTruncated (the file ends early) or ErrCorrupt (anything else). The
// reader never allocates more than the file's size justifies: a record
// buffer is at most the bytes left in the file, and at most MaxRecordSize.
//
// The application's schema version travels in the header: Header().Schema
// tells a reader how to decode the records, and MaxSchema makes it refuse,
// with a *SchemaError, a snapshot written by a newer build.
//
// # Atomic replacement and the previous snapshot
//
// Create writes to a temporary file in the same directory (path.tmp-*, mode
// 0600). Commit writes the trailer, fsyncs the file, and renames it over
// path, then fsyncs the directory: path always holds a complete snapshot,
// the old one or the new one, whatever the moment of a crash or a power
// loss. A crash before Commit leaves only the temporary file, which the next
// Create of the same path removes (a writer holds a flock on its temporary
// file, so one still being written is left alone).
//
// Commit also keeps the snapshot it replaces as path.prev (a hard link,
// made before the rename), until a reader has restored from the new one and
// called Reader.Confirm, which removes it. If path.prev exists already, the
// snapshot at path was never confirmed, and Commit keeps path.prev as it is:
// it is the last snapshot known to have been restored from. OpenLatest opens
// path, and falls back to path.prev when path is missing, truncated or
// corrupt, saying which it used and why.
//
// Commit and Confirm serialise their renames with a flock on the directory.
// Apart from that, there should be one writer at a time per path; if there
// are more, the last Commit wins.
package state
