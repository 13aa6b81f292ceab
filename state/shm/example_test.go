package shm_test

import (
	"encoding/binary"
	"fmt"
	"log"

	"github.com/procswitch/supervisor/state/shm"
)

// A worker keeps its players' coins in a region; its successor opens the
// same memory (here through the same descriptor, in production through the
// supervisor's fd store).
func Example() {
	players := shm.Layout{Name: "players", Version: 1, RecordSize: 16, Capacity: 1000}
	r, err := shm.Create("players", players)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	player := func(id, coins uint64) []byte {
		return binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, id), coins)
	}
	err = r.Update(func(tx *shm.Tx) error {
		tx.Append(player(7, 100))
		_, err := tx.Append(player(8, 50))
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	// Player 7 pays 30 coins to player 8: both records, or neither.
	err = r.Update(func(tx *shm.Tx) error {
		tx.Set(0, player(7, 70))
		return tx.Set(1, player(8, 80))
	})
	if err != nil {
		log.Fatal(err)
	}

	next, err := shm.Open(r.File(), shm.Layout{Name: "players", Version: 1, RecordSize: 16})
	if err != nil {
		log.Fatal(err) // errors.Is(err, shm.ErrLayoutMismatch): ReadLayout, Open, Migrate
	}
	defer next.Close()
	for i := range next.Len() {
		rec := next.Record(i)
		fmt.Printf("player %d: %d coins\n", binary.LittleEndian.Uint64(rec), binary.LittleEndian.Uint64(rec[8:]))
	}
	fmt.Println("generation", next.Generation())
	// Output:
	// player 7: 70 coins
	// player 8: 80 coins
	// generation 2
}
