// Package shm is a table of fixed-size records in shared memory that
// outlives the process writing it: the state of a game worker (players,
// stock) kept in a memfd that the supervisor holds in its fd store. The
// worker registers the region's File with sd_notify (FDSTORE=1, FDNAME=…),
// and its successor, or the same worker restarted after a crash, gets it
// back among LISTEN_FDS and Opens it. An upgrade copies nothing, and a kill
// -9 of the worker loses no committed transaction. The package does not pass
// the descriptor anywhere itself.
//
//	r, err := shm.Create("accounts", shm.Layout{Name: "accounts", Version: 1, RecordSize: 16, Capacity: 100_000})
//	// register r.File() in the fd store; later, in the next worker:
//	r, err := shm.Open(f, shm.Layout{Name: "accounts", Version: 1, RecordSize: 16})
//	err = r.Update(func(tx *shm.Tx) error {
//		tx.Set(from, debited)
//		return tx.Set(to, credited)
//	})
//
// # Records and layout
//
// A record is RecordSize bytes that the application encodes (with
// encoding/binary, say); it holds no Go pointers. Record(i) is a slice into
// the mapping, to read; records change only through Update. Records 0 to
// Len()-1 are in use; Append adds one, up to the layout's Capacity.
//
// The region is a header page, a redo log, and the records, each starting on
// a 4096-byte page; integers are little-endian. The header holds the magic
// "PSWSHM\x00\x01", the Layout (name, version, record size, capacity) with a
// CRC-32C over them, and two fields the commit protocol writes: the number
// of records in use and the generation, which each Open increments so that
// a worker can tell it took a region over.
//
// # Transactions and crashes
//
// Update stages whole record images (Set, Append; at most MaxTxRecords = 8
// per transaction) directly in the redo log, then commits: it writes the
// log entry (indices, images, the new count and generation, a CRC-32C),
// stores its sequence number as committed, copies the images to the records,
// and stores it as applied. Open replays an entry committed but not applied
// (applying it twice is harmless) and ignores one not committed. So a
// transaction survives a kill -9 of the writer at any instant once Update
// has returned, and otherwise vanishes whole. The memory outlives the
// process only: a machine crash or a supervisor restart loses the region,
// which is what the snapshot file (package state) is for. Update does not
// write to disk and costs well under a microsecond.
//
// There is one writer at a time: the caller serialises Updates (the game's
// world lock), readers in the same process take the same lock, and two
// processes never write the same region at once (an old worker stops
// writing before its successor Opens the region).
//
// # A successor that prepares
//
// View maps a region that another process still writes, without writing
// anything, so that a successor can read (index) the records before it
// takes over: records that change meanwhile may be read torn, and the
// application reads again what changed (it keeps a journal of what its
// transactions touched, in its own records). TakeOver then makes the view
// the writer, as Open would: it replays a transaction committed and not
// applied, and increments the generation, keeping the mapping.
//
// # Damage
//
// Open checks the magic (ErrNotRegion), the size (ErrSize), the header's
// checksum and the redo log (ErrDamaged) and the layout (ErrLayoutMismatch)
// and never panics, however the bytes were damaged. The records themselves
// carry no checksum. Create seals the memfd against shrinking, so that no
// holder can truncate it under another's mapping (which would be a SIGBUS).
//
// # Migration
//
// A build that changes the records' encoding bumps Layout.Version. Open of a
// region with another layout returns a *LayoutError; the new build reads the
// region's layout with ReadLayout, Opens it with that layout, and Migrates
// it to a new region, converting each record. The old region is not
// modified, so a rollback to the old build still finds it as it was.
package shm
