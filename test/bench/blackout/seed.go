package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/procswitch/supervisor/state"
)

// The game's snapshot records, as example-game/gameserver/snapshot.go
// documents them: schema 2; a kind byte, then strings as a uvarint length
// and bytes, signed numbers as zigzag varints.
//
//	'M' meta    kind, pid, player count (optional: a hint to size the table)
//	'P' player  id, coin, level, exp, bag size, then item and count each
//	'S' stock   item, remain
//
// The game has no flag to seed players, so the benchmark writes the
// snapshot a game with that many players would have saved at shutdown; the
// game restores it on its first start, and the benchmark checks that it did
// (the restore line's count, and each client's LOGIN reply).
const (
	gameSchema = 2
	stockEach  = 1_000_000
)

var goods = []int{1001, 1002}

// seedPlayer describes player i of a seeded game.
func seedPlayer(i int) (id string, coin int64, bag [][2]int64) {
	id = fmt.Sprintf("player%07d", i)
	coin = 100 + int64(i%1000)
	if i%3 == 0 {
		bag = append(bag, [2]int64{1001, 1 + int64(i%5)})
	}
	if i%7 == 0 {
		bag = append(bag, [2]int64{1002, 1 + int64(i%11)})
	}
	return id, coin, bag
}

func appendPlayer(b []byte, i int) []byte {
	id, coin, bag := seedPlayer(i)
	b = append(b, 'P')
	b = binary.AppendUvarint(b, uint64(len(id)))
	b = append(b, id...)
	b = binary.AppendVarint(b, coin)
	b = binary.AppendVarint(b, 1+int64(i%40)) // level
	b = binary.AppendVarint(b, int64(i%4000)) // exp
	b = binary.AppendUvarint(b, uint64(len(bag)))
	for _, it := range bag {
		b = binary.AppendUvarint(b, uint64(it[0]))
		b = binary.AppendVarint(b, it[1])
	}
	return b
}

// writeSeed writes a snapshot of n players (and the shop's stock) to path
// and returns its size.
func writeSeed(path string, n int) (int64, error) {
	w, err := state.Create(path, state.Header{Schema: gameSchema, AppVersion: "blackout-seed"})
	if err != nil {
		return 0, err
	}
	defer w.Abort()
	meta := []byte{'M'}
	meta = binary.AppendUvarint(meta, uint64(len("shutdown")))
	meta = append(meta, "shutdown"...)
	meta = binary.AppendUvarint(meta, 0)
	meta = binary.AppendUvarint(meta, uint64(n))
	if err := w.Write(meta); err != nil {
		return 0, err
	}
	size := int64(len(meta))
	var buf []byte
	for i := range n {
		buf = appendPlayer(buf[:0], i)
		size += int64(len(buf)) + 4
		if err := w.Write(buf); err != nil {
			return 0, err
		}
	}
	for _, item := range goods {
		buf = binary.AppendUvarint(append(buf[:0], 'S'), uint64(item))
		buf = binary.AppendVarint(buf, stockEach)
		if err := w.Write(buf); err != nil {
			return 0, err
		}
	}
	return size, w.Commit()
}

// seedByLogin makes n players the slow way: each logs in over its own
// connection and quits.
func seedByLogin(addr string, n int, bound time.Duration) error {
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				id, _, _ := seedPlayer(i)
				if err := loginQuit(addr, id, bound); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

func loginQuit(addr, id string, bound time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, bound)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(bound))
	if _, err := fmt.Fprintf(c, "LOGIN %s\nQUIT\n", id); err != nil {
		return err
	}
	r := bufio.NewReader(c)
	for _, want := range []string{"OK player=" + id + " ", "BYE"} {
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("seeding %s: %w", id, err)
		}
		if !strings.HasPrefix(line, want) {
			return fmt.Errorf("seeding %s: got %q", id, line)
		}
	}
	return nil
}
