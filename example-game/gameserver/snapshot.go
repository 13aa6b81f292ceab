package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/procswitch/supervisor/state"
)

// The snapshot's records, streamed through package state: one record per
// player, per stock entry and per session, never one buffer for the whole
// game. Each record is a kind byte and fields: strings and byte strings as
// a uvarint length and the bytes, numbers as varints (zigzag, signed) or
// uvarints.
//
//	'M' meta     kind (string: autosave, handover, shutdown), pid (uvarint),
//	             player count (uvarint; optional: a hint to size the table)
//	'P' player   id, coin (varint), level (varint), exp (varint),
//	             bag size (uvarint), then item (uvarint), count (varint) each
//	'S' stock    item (uvarint), remain (varint)
//	'C' session  name, remote address, player ("" before LOGIN), unprocessed
//	             input (bytes), unwritten output (bytes), flags (uvarint; 1: closing)
//
// Schema 2 is the current one. Schema 1 had no level and exp in player
// records; its players are migrated to level 1 with 0 exp.
const (
	schemaVersion = 2
	schemaNoLevel = 1 // players without level and exp

	recMeta    = 'M'
	recPlayer  = 'P'
	recStock   = 'S'
	recSession = 'C'

	flagClosing = 1
)

// Snapshot kinds, in the meta record: which save wrote it.
const (
	kindAutosave = "autosave"
	kindHandover = "handover"
	kindShutdown = "shutdown"
)

// snapshot is what a save writes and a restore reads.
type snapshot struct {
	kind     string
	pid      int
	players  []player
	stock    map[int]int64
	sessions []sessionRecord
}

// sessionRecord is a session as the snapshot keeps it: the next worker
// matches it to the connection stored under name (from remote).
type sessionRecord struct {
	name    string
	remote  string
	player  string
	in      []byte // read, not processed: processed first by the next worker
	out     []byte // replies not written: written first by the next worker
	closing bool
}

// saveEvery is how many records a save writes between checks of its
// context.
const saveEvery = 4096

// writeSnapshot streams snap to path through the state package's atomic
// writer. If ctx ends first, the file is discarded and path left as it was.
func writeSnapshot(ctx context.Context, path, appVersion string, snap *snapshot) error {
	w, err := state.Create(path, state.Header{Schema: schemaVersion, AppVersion: appVersion})
	if err != nil {
		return err
	}
	defer w.Abort() // nothing after Commit
	buf := appendMeta(nil, snap.kind, snap.pid, len(snap.players))
	if err := w.Write(buf); err != nil {
		return err
	}
	for i := range snap.players {
		if i%saveEvery == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		buf = appendPlayer(buf[:0], &snap.players[i])
		if err := w.Write(buf); err != nil {
			return err
		}
	}
	for _, item := range slices.Sorted(maps.Keys(snap.stock)) {
		if err := w.Write(appendStock(buf[:0], item, snap.stock[item])); err != nil {
			return err
		}
	}
	for i := range snap.sessions {
		if err := w.Write(appendSession(buf[:0], &snap.sessions[i])); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return w.Commit()
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendBytes(b, s []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendMeta(b []byte, kind string, pid, players int) []byte {
	b = appendString(append(b, recMeta), kind)
	b = binary.AppendUvarint(b, uint64(pid))
	return binary.AppendUvarint(b, uint64(players))
}

func appendPlayer(b []byte, p *player) []byte {
	b = appendString(append(b, recPlayer), p.id)
	b = binary.AppendVarint(b, p.coin)
	b = binary.AppendVarint(b, p.level)
	b = binary.AppendVarint(b, p.exp)
	b = binary.AppendUvarint(b, uint64(len(p.bag)))
	for _, it := range p.bag {
		b = binary.AppendUvarint(b, uint64(it.item))
		b = binary.AppendVarint(b, it.count)
	}
	return b
}

func appendStock(b []byte, item int, remain int64) []byte {
	b = binary.AppendUvarint(append(b, recStock), uint64(item))
	return binary.AppendVarint(b, remain)
}

func appendSession(b []byte, s *sessionRecord) []byte {
	b = appendString(append(b, recSession), s.name)
	b = appendString(b, s.remote)
	b = appendString(b, s.player)
	b = appendBytes(b, s.in)
	b = appendBytes(b, s.out)
	var flags uint64
	if s.closing {
		flags |= flagClosing
	}
	return binary.AppendUvarint(b, flags)
}

// restored is a snapshot read back, with where it came from.
type restored struct {
	snapshot
	header  state.Header
	path    string // the file read: the snapshot or the previous one
	refused error  // why the newest snapshot was refused, if it was
	reader  *state.Reader
}

// confirm tells the state package that the restored state is in use, so
// the previous snapshot, kept as a fallback, can go.
func (r *restored) confirm() error { return r.reader.Confirm() }

// checkSnapshot is the State's Check hook: the snapshot at path, if there
// is one, has a schema this build reads. A rollback to an older build than
// the one that wrote it fails on this, before the serving worker saves.
func checkSnapshot(path string) error {
	r, err := state.OpenLatest(path, state.MaxSchema(schemaVersion))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return r.Close()
}

// readSnapshot restores from path, or from the previous snapshot when the
// newest is damaged (state.OpenLatest). nil, nil: there is no snapshot, a
// first start.
func readSnapshot(path string) (*restored, error) {
	r, err := state.OpenLatest(path, state.MaxSchema(schemaVersion))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if r.Header().Schema < schemaNoLevel {
		return nil, fmt.Errorf("%s: schema %d: not a snapshot of this game (schema 1 or 2)", r.Path(), r.Header().Schema)
	}
	res := &restored{header: r.Header(), path: r.Path(), refused: r.Refused(), reader: r}
	res.kind, res.stock = "unknown", make(map[int]int64)
	d := &decoder{schema: r.Header().Schema, maxPlayers: maxPlayers(r.Path())}
	for n := 0; ; n++ {
		rec, err := r.Next()
		if err == io.EOF {
			return res, nil
		}
		if err != nil {
			return nil, err
		}
		if err := res.decode(d, rec); err != nil {
			return nil, fmt.Errorf("%s: record %d: %w", r.Path(), n, err)
		}
	}
}

// maxPlayers bounds the player count a snapshot's meta record may claim
// by its file's size (a player record takes 11 bytes or more), so that a
// wrong count cannot make the table's allocation huge.
func maxPlayers(path string) int {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return int(fi.Size() / 11)
}

// decode adds one record to the snapshot, migrating older schemas.
func (s *snapshot) decode(d *decoder, rec []byte) error {
	d.b, d.err = rec, nil
	switch d.byte() {
	case recMeta:
		s.kind, s.pid = d.string(), int(d.uvarint())
		if len(d.b) > 0 && s.players == nil {
			s.players = make([]player, 0, min(d.uvarint(), uint64(d.maxPlayers)))
		}
	case recPlayer:
		s.players = append(s.players, d.player())
	case recStock:
		item := int(d.uvarint())
		s.stock[item] = d.varint()
	case recSession:
		s.sessions = append(s.sessions, d.session())
	default:
		if d.err == nil {
			return fmt.Errorf("unknown record kind %q", rec[0])
		}
	}
	return d.done()
}

// decoder reads a record's fields; the first error sticks.
type decoder struct {
	b   []byte
	err error

	schema     uint32
	maxPlayers int
	bags       []bagItem       // players' bags are carved out of it, a chunk at a time
	ids        strings.Builder // players' ids are carved out of it, a chunk at a time
}

// bagChunk is how many bag entries the decoder allocates at once, and
// idChunk how many bytes of player ids: one allocation per chunk, not one
// per player.
const (
	bagChunk = 4096
	idChunk  = 64 << 10
)

var errShort = errors.New("record too short")

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.err = errShort
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if d.err == nil && n <= 0 {
		d.err = errShort
	}
	if d.err != nil {
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if d.err == nil && n <= 0 {
		d.err = errShort
	}
	if d.err != nil {
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)) {
		d.err = errShort
	}
	if d.err != nil {
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// id reads a player's id into the decoder's chunk of ids. A
// strings.Builder only ever appends, so the strings taken from it before
// stay as they are.
func (d *decoder) id() string {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)) {
		d.err = errShort
	}
	if d.err != nil {
		return ""
	}
	if d.ids.Cap()-d.ids.Len() < int(n) {
		d.ids = strings.Builder{}
		d.ids.Grow(max(idChunk, int(n)))
	}
	start := d.ids.Len()
	d.ids.Write(d.b[:n])
	d.b = d.b[n:]
	return d.ids.String()[start:]
}

func (d *decoder) player() player {
	p := player{id: d.id(), coin: d.varint(), level: 1}
	if d.schema > schemaNoLevel {
		p.level, p.exp = d.varint(), d.varint()
	}
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)) { // each entry takes 2 bytes or more
		d.err = errShort
	}
	if d.err != nil || n == 0 {
		return p
	}
	if len(d.bags)+int(n) > cap(d.bags) {
		d.bags = make([]bagItem, 0, max(bagChunk, int(n)))
	}
	start := len(d.bags)
	for range n {
		item, count := int(d.uvarint()), d.varint()
		if d.err == nil && count > 0 {
			d.bags = append(d.bags, bagItem{item: item, count: count})
		}
	}
	// The bag is copy-on-write (player.add): capping it keeps the next
	// player's entries out of its reach.
	if len(d.bags) > start {
		p.bag = d.bags[start:len(d.bags):len(d.bags)]
	}
	if d.err == nil && !slices.IsSortedFunc(p.bag, func(a, b bagItem) int { return a.item - b.item }) {
		d.err = fmt.Errorf("player %q: bag not in item order", p.id)
	}
	return p
}

func (d *decoder) session() sessionRecord {
	s := sessionRecord{name: d.string(), remote: d.string(), player: d.string()}
	s.in, s.out = []byte(d.string()), []byte(d.string())
	s.closing = d.uvarint()&flagClosing != 0
	return s
}

func (d *decoder) done() error {
	if d.err == nil && len(d.b) > 0 {
		d.err = fmt.Errorf("%d bytes left over", len(d.b))
	}
	return d.err
}

// age says how long ago t was, for the logs: "3.2s", "15ms".
func age(t time.Time) string {
	d := time.Since(t)
	if d < time.Second {
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}
