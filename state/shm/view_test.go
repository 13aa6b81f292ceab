package shm

import (
	"errors"
	"strconv"
	"testing"
)

// TestView: a view sees what the writer writes, refuses to write, and once
// the writer has stopped, TakeOver makes it the writer (generation + 1) on
// the same mapping.
func TestView(t *testing.T) {
	r := newAccounts(t)
	v, err := View(r.File(), accounts)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if v.Generation() != 1 {
		t.Errorf("a view changed the generation to %d", v.Generation())
	}
	if err := r.Update(func(tx *Tx) error { tx.Set(3, account(3, 990)); return tx.Set(4, account(4, 1010)) }); err != nil {
		t.Fatal(err)
	}
	if balance(v.Record(3)) != 990 || balance(v.Record(4)) != 1010 {
		t.Errorf("the view sees %d and %d, want the writer's 990 and 1010", balance(v.Record(3)), balance(v.Record(4)))
	}
	if err := v.Update(func(tx *Tx) error { return tx.Set(3, account(3, 1)) }); !errors.Is(err, ErrView) {
		t.Fatalf("Update on a view: %v, want ErrView", err)
	}
	r.Close() // the writer stops
	if err := v.TakeOver(); err != nil {
		t.Fatal(err)
	}
	if v.Generation() != 2 {
		t.Errorf("after TakeOver: generation %d, want 2", v.Generation())
	}
	if err := v.Update(func(tx *Tx) error { return tx.Set(3, account(3, 995)) }); err != nil {
		t.Fatalf("Update after TakeOver: %v", err)
	}
}

// TestViewTakeOverReplays: a view mapped before its writer was killed
// between commit and apply replays the transaction when it takes over, as
// Open does.
func TestViewTakeOverReplays(t *testing.T) {
	r := newAccounts(t)
	v, err := View(r.File(), accounts)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	cmd := startHelper(t, r, "stop", helperStageEnv+"="+strconv.Itoa(int(stageCommitted)))
	kill(t, cmd)
	if got := balance(v.Record(0)); got != 1000 {
		t.Fatalf("before TakeOver the view sees %d in account 0, want 1000 (committed, not applied)", got)
	}
	if err := v.TakeOver(); err != nil {
		t.Fatal(err)
	}
	if !v.replayed || balance(v.Record(0)) != 993 || sum(v.recs) != total {
		t.Errorf("after TakeOver: replayed %v, account 0 %d, sum %d; want the transfer of 7 applied", v.replayed, balance(v.Record(0)), sum(v.recs))
	}
}
