package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"unsafe"

	"github.com/procswitch/supervisor/state/shm"
)

// --live keeps the game's data in a shared-memory region (package
// state/shm, a memfd) as well as in the Go world: every command that
// changes a player or the stock writes the records it changed in one
// transaction, together with its session's record, so that the region is
// always the state after some whole number of commands. The worker stores
// the region in the supervisor's live fd store, and each connection as it
// accepts it: a worker killed at any instant is restarted by the
// supervisor on the same region and connections, rebuilds its world from
// the region, and resumes every session where it was (live.go).
//
// The region is fixed records of regionRecordSize bytes, little-endian:
//
//	0                          meta: the journal's head (live.go)
//	firstGood …                the stock, one record per good (maxGoods)
//	firstSession …             the sessions, one per slot (maxSessions): a
//	                           connection is stored as "s<slot>"
//	firstJournal …             the journal: the index of each player record
//	                           written, 32 to a record, a ring of
//	                           journalRecords, so that a successor that read
//	                           the players ahead reads again only those
//	                           (prepare.go)
//	firstPlayer …              the players, in order of first login
const (
	regionLayoutName = "gameserver"

	maxGoods    = 32
	maxSessions = 16384 // the supervisor's default --fd-store-max

	journalRecords = 4096
	journalPerRec  = regionRecordSize / 8
	journalSize    = journalRecords * journalPerRec // entries the ring holds

	firstGood    = 1
	firstSession = firstGood + maxGoods
	firstJournal = firstSession + maxSessions
	firstPlayer  = firstJournal + journalRecords

	metaHead = 8 // the meta record's uint64: journal entries ever written

	// maxMarked is how much of a command line a session record keeps: every
	// valid command is shorter (LOGIN and a 64-byte id: 70); a longer line
	// is an error whatever it says.
	maxMarked = 80
)

// regionFDName is the region's name in the fd store: its layout's version
// in it, so that a build finds the region it can read, and one it must
// migrate from (migrate.go).
var regionFDName = regionName(regionVersion)

func regionName(version uint32) string { return "region.v" + strconv.Itoa(int(version)) }

// regionLayout is the region's layout for players players at most.
func regionLayout(players int) shm.Layout {
	return shm.Layout{Name: regionLayoutName, Version: regionVersion, RecordSize: regionRecordSize, Capacity: firstPlayer + players}
}

// Record kinds, the first byte of a record.
const (
	kindMeta    = 'M'
	kindGood    = 'G'
	kindSession = 'S'
	kindPlayer  = 'P'
)

// Player record: kind, id length, id (64), coin, level, exp, bag length,
// then the bag: item (int32) and count (int64) each.
const (
	pID    = 2
	pCoin  = pID + maxIDLen
	pLevel = pCoin + 8
	pExp   = pLevel + 8
	pBagN  = pExp + 8
	pBag   = pBagN + 1
)

func encodePlayer(rec []byte, p *player) error {
	if len(p.bag) > bagSlots {
		return fmt.Errorf("player %s holds %d kinds of goods, the region %d", p.id, len(p.bag), bagSlots)
	}
	clear(rec)
	rec[0], rec[1] = kindPlayer, byte(len(p.id))
	copy(rec[pID:], p.id)
	le.PutUint64(rec[pCoin:], uint64(p.coin))
	le.PutUint64(rec[pLevel:], uint64(p.level))
	le.PutUint64(rec[pExp:], uint64(p.exp))
	rec[pBagN] = byte(len(p.bag))
	for i, b := range p.bag {
		at := pBag + 12*i
		le.PutUint32(rec[at:], uint32(int32(b.item)))
		le.PutUint64(rec[at+4:], uint64(b.count))
	}
	return nil
}

func decodePlayer(rec []byte) (player, error) { return (*playerArena)(nil).decode(rec) }

// playerArena holds the ids and the bags of players decoded in bulk: two
// allocations for a whole table instead of two per player, which at 100k
// players was most of reading a region (the read that a crash restart
// cannot do ahead). A nil arena allocates per player.
type playerArena struct {
	ids  []byte    // never written once an id is made from it
	bags []bagItem // each bag a full slice of it: add copies, never appends in place
}

// newPlayerArena makes room for the ids and bags of recs.
func newPlayerArena(recs func(yield func([]byte) bool)) *playerArena {
	var ids, bags int
	for rec := range recs {
		ids += min(int(rec[1]), maxIDLen)
		bags += min(int(rec[pBagN]), bagSlots)
	}
	return &playerArena{ids: make([]byte, 0, ids), bags: make([]bagItem, 0, bags)}
}

func (a *playerArena) decode(rec []byte) (player, error) {
	n, nbag := int(rec[1]), int(rec[pBagN])
	if rec[0] != kindPlayer || n == 0 || n > maxIDLen || nbag > bagSlots {
		return player{}, errors.New("not a player record")
	}
	p := player{coin: int64(le.Uint64(rec[pCoin:])), level: int64(le.Uint64(rec[pLevel:])), exp: int64(le.Uint64(rec[pExp:]))}
	// The id is checked in its copy: during a read ahead, the region may
	// change under the reader.
	if id := rec[pID : pID+n]; a != nil && len(a.ids)+n <= cap(a.ids) {
		at := len(a.ids)
		a.ids = append(a.ids, id...)
		p.id = unsafe.String(&a.ids[at], n)
	} else {
		p.id = string(id)
	}
	if !validID(p.id) {
		return player{}, fmt.Errorf("bad player id %q", p.id)
	}
	if nbag > 0 {
		if a != nil && len(a.bags)+nbag <= cap(a.bags) {
			at := len(a.bags)
			a.bags = a.bags[:at+nbag]
			p.bag = a.bags[at : at+nbag : at+nbag]
		} else {
			p.bag = make([]bagItem, nbag)
		}
		for i := range p.bag {
			at := pBag + 12*i
			p.bag[i] = bagItem{item: int(int32(le.Uint32(rec[at:]))), count: int64(le.Uint64(rec[at+4:]))}
		}
	}
	return p, nil
}

// Good record: kind, item (int64), remain (int64).
func encodeGood(rec []byte, item int, remain int64) {
	clear(rec)
	rec[0] = kindGood
	le.PutUint64(rec[1:], uint64(item))
	le.PutUint64(rec[9:], uint64(remain))
}

func decodeGood(rec []byte) (item int, remain int64, ok bool) {
	if rec[0] != kindGood {
		return 0, 0, false
	}
	return int(le.Uint64(rec[1:])), int64(le.Uint64(rec[9:])), true
}

// sessionRec is a session's record: which player it is logged in as, and
// the command it is running, if any, with its reply once applied.
type sessionRec struct {
	used     bool
	player   int64  // index in the world's players, -1 before LOGIN
	state    byte   // markNone, markRead or markApplied
	pos      uint64 // where the marked line begins in the connection's input: bytes taken from the socket before it; markSettled: all taken
	length   int    // the marked line's length, in bytes, without its "\n"
	line     []byte // its first maxMarked bytes
	outPos   uint64 // markApplied: where its reply begins in the connection's output: bytes written before it; markSettled: all written
	replyLen int    // markApplied: the reply's length, with its "\n"
	reply    []byte // markApplied: the reply, if it fits in maxReply bytes; else nil
}

// A session's mark: the command line it runs, from before it is taken from
// the socket until its reply is written.
const (
	markNone    = 0 // no command in progress
	markRead    = 1 // the line was marked; it may or may not have been taken from the socket, and was not applied
	markApplied = 2 // the command's effect is committed, and its reply noted; the reply may not have been written
	// markSettled: no command in progress, and pos and outPos are exactly
	// the bytes taken from the socket and written to it since the
	// connection began, so a successor need not ask the kernel (positions)
	// before the session's next mark. A build before this state reads it
	// as a mark of an unknown kind: it asks the kernel, and runs nothing.
	markSettled = 3
)

// Session record: kind, used, state, player (int64), input position
// (uint64), line length (uint16), line (maxMarked bytes), output position
// (uint64), reply length (uint16), reply (maxReply bytes).
const (
	sPlayer = 3
	sPos    = sPlayer + 8
	sLen    = sPos + 8
	sLine   = sLen + 2
	sOutPos = sLine + maxMarked
	sRepLen = sOutPos + 8
	sReply  = sRepLen + 2

	// maxReply is the longest reply a session record keeps, "\n"
	// included: every reply to WORK and BUY, and STATUS with a few goods.
	// A longer reply that may not have been written is replaced, at a
	// restart, by a notice that the command was applied.
	maxReply = regionRecordSize - sReply
)

func encodeSession(rec []byte, s sessionRec) {
	clear(rec)
	rec[0] = kindSession
	if s.used {
		rec[1] = 1
	}
	rec[2] = s.state
	le.PutUint64(rec[sPlayer:], uint64(s.player))
	le.PutUint64(rec[sPos:], s.pos)
	le.PutUint16(rec[sLen:], uint16(min(s.length, 0xffff)))
	copy(rec[sLine:sLine+maxMarked], s.line)
	le.PutUint64(rec[sOutPos:], s.outPos)
	le.PutUint16(rec[sRepLen:], uint16(min(s.replyLen, 0xffff)))
	if len(s.reply) <= maxReply {
		copy(rec[sReply:], s.reply)
	}
}

func decodeSession(rec []byte) sessionRec {
	if rec[0] != kindSession {
		return sessionRec{player: -1}
	}
	n, nr := int(le.Uint16(rec[sLen:])), int(le.Uint16(rec[sRepLen:]))
	s := sessionRec{used: rec[1] == 1, state: rec[2], player: int64(le.Uint64(rec[sPlayer:])),
		pos: le.Uint64(rec[sPos:]), length: n, line: append([]byte(nil), rec[sLine:sLine+min(n, maxMarked)]...),
		outPos: le.Uint64(rec[sOutPos:]), replyLen: nr}
	if nr > 0 && nr <= maxReply {
		s.reply = append([]byte(nil), rec[sReply:sReply+nr]...)
	}
	return s
}

var le = binary.LittleEndian
