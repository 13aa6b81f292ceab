package state_test

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"path/filepath"

	"github.com/procswitch/supervisor/state"
)

// A player as the new build knows it. Schema 1 had only ID and Coin; schema
// 2 added Level and Exp.
type player struct {
	ID         string
	Coin       int
	Level, Exp int
}

// encode is the schema 2 encoding of a player.
func (p player) encode() []byte {
	return fmt.Appendf(nil, "%s %d %d %d", p.ID, p.Coin, p.Level, p.Exp)
}

// decodePlayer decodes a record of the given schema, migrating schema 1
// players: they start at level 1 with no experience.
func decodePlayer(schema uint32, rec []byte) (player, error) {
	var p player
	switch schema {
	case 1:
		_, err := fmt.Sscanf(string(rec), "%s %d", &p.ID, &p.Coin)
		p.Level = 1
		return p, err
	case 2:
		_, err := fmt.Sscanf(string(rec), "%s %d %d %d", &p.ID, &p.Coin, &p.Level, &p.Exp)
		return p, err
	}
	return p, fmt.Errorf("unknown schema %d", schema)
}

// restorePlayers reads every player from the latest good snapshot at path;
// the caller confirms it with r.Confirm once the players are in use.
func restorePlayers(path string) ([]player, *state.Reader, error) {
	r, err := state.OpenLatest(path, state.MaxSchema(2))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil // a first start: no players yet
	}
	if err != nil {
		return nil, nil, err // a *SchemaError says to run a newer build
	}
	defer r.Close()
	if r.Refused() != nil {
		log.Printf("%v; using the previous snapshot, saved at %v", r.Refused(), r.Header().Created)
	}
	var players []player
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return players, r, nil // the whole file is verified
		}
		if err != nil {
			return nil, nil, err
		}
		p, err := decodePlayer(r.Header().Schema, rec)
		if err != nil {
			return nil, nil, err
		}
		players = append(players, p)
	}
}

// The old build saved its players with schema 1; the new build restores
// them, migrating each record, and saves them again with schema 2.
func Example_migrate() {
	dir, err := os.MkdirTemp("", "state-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "world.snap")

	// The old build (v1.2, schema 1): "id coin".
	w, err := state.Create(path, state.Header{Schema: 1, AppVersion: "v1.2"})
	if err != nil {
		log.Fatal(err)
	}
	defer w.Abort()
	w.Write([]byte("alice 120"))
	w.Write([]byte("bob 95"))
	if err := w.Commit(); err != nil {
		log.Fatal(err)
	}

	// The new build (v1.3, schema 2) restores them.
	players, r, err := restorePlayers(path)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("restored %d players from schema %d, written by %s\n",
		len(players), r.Header().Schema, r.Header().AppVersion)
	for _, p := range players {
		fmt.Printf("%+v\n", p)
	}
	if err := r.Confirm(); err != nil {
		log.Fatal(err)
	}

	// It plays on, and saves with schema 2.
	players[1].Exp += 30
	w, err = state.Create(path, state.Header{Schema: 2, AppVersion: "v1.3"})
	if err != nil {
		log.Fatal(err)
	}
	defer w.Abort()
	for _, p := range players {
		if err := w.Write(p.encode()); err != nil {
			log.Fatal(err)
		}
	}
	if err := w.Commit(); err != nil {
		log.Fatal(err)
	}

	// The old build cannot read that, and says why.
	_, err = state.Open(path, state.MaxSchema(1))
	var se *state.SchemaError
	fmt.Println(errors.As(err, &se), se.Schema, se.AppVersion)

	// Output:
	// restored 2 players from schema 1, written by v1.2
	// {ID:alice Coin:120 Level:1 Exp:0}
	// {ID:bob Coin:95 Level:1 Exp:0}
	// true 2 v1.3
}

// A snapshot damaged on disk is refused, and OpenLatest restores the
// previous one instead.
func ExampleOpenLatest() {
	dir, err := os.MkdirTemp("", "state-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "world.snap")

	for _, version := range []string{"v1", "v2"} {
		if err := state.WriteFile(path, state.Header{AppVersion: version}, [][]byte{[]byte("alice 120")}); err != nil {
			log.Fatal(err)
		}
	}
	os.Truncate(path, 40) // v2's file loses its end

	r, err := state.OpenLatest(path)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	fmt.Println(filepath.Base(r.Path()), r.Header().AppVersion)
	fmt.Println(errors.Is(r.Refused(), state.ErrTruncated))
	// Output:
	// world.snap.prev v1
	// true
}
