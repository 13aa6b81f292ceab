package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/state"
)

func testSnapshot() *snapshot {
	return &snapshot{
		kind: kindHandover, pid: 4242,
		players: []player{
			{id: "alice", coin: 125, level: 2, exp: 130, bag: []bagItem{{1001, 3}, {1002, 1}}},
			{id: "bob", coin: -40, level: 1, exp: 2, bag: []bagItem{{1001, 14}}}, // the buggy shop's doing
			{id: "new_player-1", coin: 100, level: 1},
		},
		stock: map[int]int64{1001: 999983, 1002: 999999},
		sessions: []sessionRecord{
			{name: "c0", remote: "127.0.0.1:50000", player: "alice", in: []byte("WORK\nSTA"), out: []byte("=120\n")},
			{name: "c1", remote: "127.0.0.1:50001", in: []byte("LOG"), out: []byte{}},
			{name: "c2", remote: "[::1]:50002", player: "bob", in: []byte{}, out: []byte("BYE\n"), closing: true},
		},
	}
}

// TestSnapshotRoundTrip saves players, stock and sessions with pending
// input and output, and restores exactly the same.
func TestSnapshotRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snap")
	want := testSnapshot()
	if err := writeSnapshot(context.Background(), path, "v-test", want); err != nil {
		t.Fatal(err)
	}
	res, err := readSnapshot(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&res.snapshot, want) {
		t.Fatalf("restored\n%+v\nwant\n%+v", res.snapshot, *want)
	}
	if h := res.header; h.Schema != schemaVersion || h.AppVersion != "v-test" || res.path != path || res.refused != nil {
		t.Errorf("header %+v, path %s, refused %v", h, res.path, res.refused)
	}
	if err := res.confirm(); err != nil {
		t.Errorf("confirm: %v", err)
	}
}

// TestSnapshotSaveCancelled: an autosave abandoned by a handover leaves the
// last snapshot as it was.
func TestSnapshotSaveCancelled(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snap")
	old := testSnapshot()
	if err := writeSnapshot(context.Background(), path, "old", old); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := writeSnapshot(ctx, path, "new", &snapshot{kind: kindAutosave}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled save: %v, want context.Canceled", err)
	}
	res, err := readSnapshot(path)
	if err != nil || res.header.AppVersion != "old" {
		t.Fatalf("after a cancelled save: %v, %+v", err, res)
	}
	if tmps, _ := filepath.Glob(path + ".tmp-*"); len(tmps) > 0 {
		t.Errorf("temporary files left: %v", tmps)
	}
}

// appendPlayerV1 encodes a player as schema 1 did: without level and exp.
func appendPlayerV1(b []byte, id string, coin int64, bag []bagItem) []byte {
	b = appendString(append(b, recPlayer), id)
	b = binary.AppendVarint(b, coin)
	b = binary.AppendUvarint(b, uint64(len(bag)))
	for _, it := range bag {
		b = binary.AppendUvarint(b, uint64(it.item))
		b = binary.AppendVarint(b, it.count)
	}
	return b
}

// writeSchema1 writes a schema-1 snapshot with the state package's writer.
func writeSchema1(t *testing.T, path string) {
	t.Helper()
	w, err := state.Create(path, state.Header{Schema: 1, AppVersion: "v0-schema1"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for _, rec := range [][]byte{
		binary.AppendUvarint(appendString([]byte{recMeta}, kindAutosave), 7), // without the player count
		appendPlayerV1(nil, "old_timer", 345, []bagItem{{1001, 2}}),
		appendPlayerV1(nil, "debtor", -20, nil),
		appendStock(nil, 1001, 500),
		appendStock(nil, 1002, 600),
	} {
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
}

// TestSchema1Migration restores a schema-1 snapshot: its players get
// level 1 and 0 exp, and keep everything else.
func TestSchema1Migration(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snap")
	writeSchema1(t, path)
	res, err := readSnapshot(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []player{
		{id: "old_timer", coin: 345, level: 1, exp: 0, bag: []bagItem{{1001, 2}}},
		{id: "debtor", coin: -20, level: 1, exp: 0},
	}
	if res.header.Schema != 1 || !reflect.DeepEqual(res.players, want) {
		t.Fatalf("schema %d, players %+v; want schema 1, %+v", res.header.Schema, res.players, want)
	}
	if !reflect.DeepEqual(res.stock, map[int]int64{1001: 500, 1002: 600}) {
		t.Errorf("stock %v", res.stock)
	}

	// The binary restores it too, and saves it back as schema 2.
	p := startGame(t, "", "--snapshot", path, "--autosave", "0")
	p.log.wait(t, new(int), regexp.MustCompile(`restored autosave from .* 2 players.* schema 1, written by v0-schema1 pid 7`))
	c := dial(t, p.addr)
	c.expect(t, "LOGIN old_timer", "OK player=old_timer coin=345 version=test")
	c.expect(t, "BUY 1001", "OK coin=335 item=1001 count=3 remain=499")
	p.stop(t, syscall.SIGTERM)
	res, err = readSnapshot(path)
	if err != nil || res.header.Schema != schemaVersion || res.players[0].level != 1 {
		t.Fatalf("saved after migration: %v, %+v", err, res)
	}
}

// TestSnapshotSchemaTooNew: a snapshot from a newer build is refused, not
// half-read.
func TestSnapshotSchemaTooNew(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snap")
	if err := state.WriteFile(path, state.Header{Schema: schemaVersion + 1, AppVersion: "v9"}, nil); err != nil {
		t.Fatal(err)
	}
	_, err := readSnapshot(path)
	if !errors.Is(err, state.ErrSchemaTooNew) {
		t.Fatalf("got %v, want ErrSchemaTooNew", err)
	}
	p := startProc(t, os.Args[0], []string{helperEnv + "=main", helperVersionEnv + "=test"},
		"--listen", "127.0.0.1:0", "--snapshot", path)
	select {
	case <-p.exited:
	case <-time.After(waitBound):
		t.Fatal("still running on a snapshot it cannot read")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != exitFail {
		t.Errorf("exit status %d, want %d", code, exitFail)
	}
	p.log.wait(t, new(int), regexp.MustCompile(`restore: .*schema 3 is newer than this build knows`))
}

// TestRestartRestores: run on its own, the server saves on SIGTERM and
// restores on the next start.
func TestRestartRestores(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snap")
	p := startGame(t, "", "--snapshot", path, "--autosave", "0")
	p.log.wait(t, new(int), regexp.MustCompile(`no snapshot at .*: a first start`))
	c := dial(t, p.addr)
	c.expect(t, "LOGIN rita", "OK player=rita coin=100 version=test")
	c.expect(t, "WORK", "OK coin=105")
	c.expect(t, "BUY 1001", "OK coin=95 item=1001 count=1 remain=999999")
	p.stop(t, syscall.SIGTERM)
	p.log.wait(t, new(int), regexp.MustCompile(`stopped: saved 1 players to `))

	p = startGame(t, "", "--snapshot", path, "--autosave", "0")
	p.log.wait(t, new(int), regexp.MustCompile(`restored shutdown snapshot from \S+ ago: 1 players`))
	c = dial(t, p.addr)
	c.expect(t, "LOGIN rita", "OK player=rita coin=95 version=test")
	c.expect(t, "STATUS", fmt.Sprintf("OK player=rita coin=95 bag=1001:1 version=test pid=%d", p.cmd.Process.Pid))
	c.expect(t, "STOCK 1001", "OK item=1001 remain=999999")
}

// TestDamagedSnapshotFallsBack: a newest snapshot with a flipped byte is
// refused, never loaded; the previous one is restored and the log says so.
func TestDamagedSnapshotFallsBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snap")
	first := &snapshot{kind: kindAutosave, pid: 1, players: []player{{id: "uma", coin: 150, level: 1}}}
	second := &snapshot{kind: kindAutosave, pid: 1, players: []player{{id: "uma", coin: 999, level: 1}}}
	for _, s := range []*snapshot{first, second} {
		if err := writeSnapshot(context.Background(), path, "v-test", s); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	p := startGame(t, "", "--snapshot", path, "--autosave", "0")
	at := 0
	p.log.wait(t, &at, regexp.MustCompile(`restored autosave from \S+ ago: 1 players, 0 connections resumed \(\S+snap\.prev,`))
	p.log.wait(t, &at, regexp.MustCompile(`the newest snapshot was refused \(.*corrupt.*\); the previous one, \S+snap\.prev, was used instead`))
	dial(t, p.addr).expect(t, "LOGIN uma", "OK player=uma coin=150 version=test")
}
