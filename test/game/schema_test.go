package game

import (
	"fmt"
	"strings"
	"testing"

	"github.com/procswitch/supervisor/state"
)

// TestUpgradeRefusesNewerSnapshot: a build that cannot read the snapshot the
// serving worker writes (a schema it does not know, as when rolling back to
// an older build after a newer one changed the schema) fails before it says
// WAITING, so the serving worker is never told to save: the upgrade fails
// with the worker's own reason, and the same worker serves on, every bot
// connected, the ledger intact.
func TestUpgradeRefusesNewerSnapshot(t *testing.T) {
	const nbots = 20
	s := startSupervised(t, supervisedOpts{
		bin:        bins.buggy,
		workerArgs: []string{"--autosave", "1h", "--stock", fmt.Sprint(bigStock)},
	})
	_, pid := s.ready(t)
	ledger, _, probe, bots, tm := startPlaying(t, s.addr, nbots)

	// What a newer build would have autosaved.
	w, err := state.Create(s.snapshot, state.Header{Schema: 99, AppVersion: "v9-future"})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	o := s.hup(t)
	if o.ok {
		t.Fatal("an upgrade to a build that cannot read the snapshot succeeded")
	}
	reason := o.end.Str("reason")
	if kind := o.end.Str("kind"); kind != "exited-before-ready" || !strings.Contains(reason, "schema 99") || o.end.Bool("rolled_back") {
		t.Errorf("upgrade failed: kind %q, rolled_back %v, reason %q; want exited-before-ready, no rollback, a reason naming schema 99",
			kind, o.end.Bool("rolled_back"), reason)
	}
	for _, l := range s.Log.All()[o.started:] {
		if l.Msg() == "handover: new worker initialised, old one saving" {
			t.Errorf("the serving worker was told to save for a build that cannot restore: %s", l.Raw)
		}
	}
	t.Logf("refused: %s", reason)
	tm.waitPast(t, tm.marks(), 3)
	if err := tm.halt(); err != nil {
		t.Fatal(err)
	}
	for _, b := range append(bots, probe) {
		b.c.expect(t, "STATUS", b.status(buggyVersion, pid))
	}
	ledger.check(t, probe.c)
}
