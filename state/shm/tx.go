package shm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// MaxTxRecords is the most records one transaction may set or append.
const MaxTxRecords = 8

// The redo log, at the region's second page: two sequence numbers, then one
// entry. A writer writes the entry, then sets committed to the entry's
// sequence number, applies the entry to the records, then sets applied.
const (
	logCommitted = 0  // uint64, the last committed entry, stored atomically
	logApplied   = 8  // uint64, the last entry applied, stored atomically
	logSeq       = 64 // uint64, the entry's sequence number
	logN         = 72 // uint32, the entry's slots in use
	logCount     = 80 // uint64, Len() after the entry
	logGen       = 88 // uint64, Generation() after the entry
	logCRC       = 96 // uint32, CRC-32C of [logSeq, logCRC) and the slots in use
	logSlots     = 128
)

// A Tx stages the changes of one Update. It is valid only inside the
// function given to Update.
type Tx struct {
	r     *Region
	n     int   // slots staged
	count int   // Len() after the transaction
	err   error // the first failure, which Update returns
}

// Update runs fn, then commits the records it staged, atomically: after a
// crash of the process at any instant, the next Open finds all of them or
// none. If fn returns an error, or a Set or Append failed, Update commits
// nothing and returns that error. Reads of Record inside fn see the records
// as they were before the transaction.
func (r *Region) Update(fn func(tx *Tx) error) error {
	if r.mem == nil {
		return ErrClosed
	}
	if r.inTx {
		return errors.New("shm: Update inside Update")
	}
	if r.viewOnly {
		return ErrView
	}
	r.inTx = true
	r.tx = Tx{r: r, count: r.Len()}
	defer func() { r.inTx, r.tx.r = false, nil }()
	err := fn(&r.tx)
	tx := r.tx
	if err == nil {
		err = tx.err
	}
	if err != nil {
		return err
	}
	if tx.n > 0 || tx.count != r.Len() {
		r.commit(tx.n, tx.count, r.Generation())
	}
	return nil
}

// Set stages rec, of exactly the layout's record size, as the new image of
// record i, which is in use or appended earlier in this transaction.
func (tx *Tx) Set(i int, rec []byte) error {
	if i < 0 || i >= tx.count {
		return tx.fail(fmt.Errorf("shm: Set(%d) of %d records", i, tx.count))
	}
	return tx.stage(i, rec)
}

// Append stages rec as a new record and returns its index.
func (tx *Tx) Append(rec []byte) (int, error) {
	if tx.r != nil && tx.count >= tx.r.layout.Capacity {
		return 0, tx.fail(fmt.Errorf("%w: %d records", ErrFull, tx.count))
	}
	if err := tx.stage(tx.count, rec); err != nil {
		return 0, err
	}
	tx.count++
	return tx.count - 1, nil
}

func (tx *Tx) stage(i int, rec []byte) error {
	switch {
	case tx.r == nil:
		return errors.New("shm: Tx used outside its Update")
	case tx.err != nil:
		return tx.err
	case len(rec) != tx.r.layout.RecordSize:
		return tx.fail(fmt.Errorf("shm: record of %d bytes, the layout's are %d", len(rec), tx.r.layout.RecordSize))
	case tx.n == MaxTxRecords:
		return tx.fail(fmt.Errorf("%w: at most %d (MaxTxRecords)", ErrTxTooLarge, MaxTxRecords))
	}
	slot := tx.r.slot(tx.n)
	binary.LittleEndian.PutUint64(slot, uint64(i))
	copy(slot[8:], rec)
	tx.n++
	return nil
}

func (tx *Tx) fail(err error) error {
	if tx.err == nil {
		tx.err = err
	}
	return err
}

// slot is the log's slot k: a record's index, then its image.
func (r *Region) slot(k int) []byte {
	off := logSlots + k*r.layout.slotSize()
	return r.log[off : off+8+r.layout.RecordSize]
}

// commit writes the log entry of the n staged slots, count and gen, commits
// it and applies it.
func (r *Region) commit(n, count int, gen uint64) {
	le := binary.LittleEndian
	seq := r.load(r.log, logCommitted) + 1
	le.PutUint64(r.log[logSeq:], seq)
	le.PutUint32(r.log[logN:], uint32(n))
	le.PutUint64(r.log[logCount:], uint64(count))
	le.PutUint64(r.log[logGen:], gen)
	le.PutUint32(r.log[logCRC:], r.entryCRC(n))
	crashPoint(stageLogged)
	r.store(r.log, logCommitted, seq)
	crashPoint(stageCommitted)
	r.apply(n, count, gen)
	crashPoint(stageApplied)
	r.store(r.log, logApplied, seq)
}

func (r *Region) entryCRC(n int) uint32 {
	crc := crc32.Checksum(r.log[logSeq:logCRC], castagnoli)
	return crc32.Update(crc, castagnoli, r.log[logSlots:logSlots+n*r.layout.slotSize()])
}

// apply copies the entry's n slots to the records and sets count and gen. It
// is idempotent.
func (r *Region) apply(n, count int, gen uint64) {
	for k := range n {
		s := r.slot(k)
		copy(r.record(int(binary.LittleEndian.Uint64(s))), s[8:])
		if k == 0 {
			crashPoint(stageApplying)
		}
	}
	r.store(r.mem, hdrCount, uint64(count))
	r.store(r.mem, hdrGen, gen)
}

// recover applies the log's entry if it was committed but not applied; an
// entry that was not committed is left to be overwritten.
func (r *Region) recover() error {
	committed, applied := r.load(r.log, logCommitted), r.load(r.log, logApplied)
	switch {
	case committed == applied:
	case committed == applied+1:
		n, count, gen, err := r.checkEntry(committed)
		if err != nil {
			return err
		}
		r.apply(n, count, gen)
		r.store(r.log, logApplied, committed)
		r.replayed = true
	default:
		return fmt.Errorf("%w: redo log committed %d, applied %d", ErrDamaged, committed, applied)
	}
	if n := r.Len(); n > r.layout.Capacity {
		return fmt.Errorf("%w: %d records in use, capacity %d", ErrDamaged, n, r.layout.Capacity)
	}
	return nil
}

// checkEntry checks the committed log entry seq and returns its contents.
func (r *Region) checkEntry(seq uint64) (n, count int, gen uint64, err error) {
	le := binary.LittleEndian
	n64, count64 := uint64(le.Uint32(r.log[logN:])), le.Uint64(r.log[logCount:])
	switch {
	case le.Uint64(r.log[logSeq:]) != seq:
		return 0, 0, 0, fmt.Errorf("%w: redo log entry %d committed, %d written", ErrDamaged, seq, le.Uint64(r.log[logSeq:]))
	case n64 > MaxTxRecords || count64 > uint64(r.layout.Capacity):
		return 0, 0, 0, fmt.Errorf("%w: redo log entry %d out of range", ErrDamaged, seq)
	case r.entryCRC(int(n64)) != le.Uint32(r.log[logCRC:]):
		return 0, 0, 0, fmt.Errorf("%w: redo log entry %d checksum", ErrDamaged, seq)
	}
	for k := range int(n64) {
		if i := le.Uint64(r.slot(k)); i >= count64 {
			return 0, 0, 0, fmt.Errorf("%w: redo log entry %d sets record %d of %d", ErrDamaged, seq, i, count64)
		}
	}
	return int(n64), int(count64), le.Uint64(r.log[logGen:]), nil
}

// The instants of a commit at which the crash tests stop a writer.
type stage int

const (
	stageLogged    stage = iota + 1 // the entry is written, not committed
	stageCommitted                  // committed, not applied
	stageApplying                   // the first record applied, not the rest
	stageApplied                    // applied, not marked so
)

// crashHook, set only by tests, is called at each stage of a commit.
var crashHook func(stage)

func crashPoint(s stage) {
	if crashHook != nil {
		crashHook(s)
	}
}
