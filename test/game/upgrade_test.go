package game

import (
	"fmt"
	"testing"
)

// bigStock is each good's stock in the tests: bots on the buggy build buy
// on credit without end, and must never run the shop out.
const bigStock = 100_000_000

// TestUpgradesUnderLoad: 200 bots play without pause (one command at a
// time each, WORK and BUY) while 10 handover upgrades alternate between the
// buggy and the fixed build. No connection closes, every reply is well
// formed and exactly what the bot's own history predicts (coin, bag count;
// the fixed build refuses what the buggy one sells on credit), the stock is
// continuous across all bots and builds, and after each upgrade STATUS
// answers from the new worker's PID with the new version, on the same
// connection.
func TestUpgradesUnderLoad(t *testing.T) {
	const nbots, upgrades = 200, 10
	s := startSupervised(t, supervisedOpts{
		bin:        bins.buggy,
		flags:      []string{"--ready-timeout", "30s", "--drain-timeout", "30s"},
		workerArgs: []string{"--autosave", "500ms", "--stock", fmt.Sprint(bigStock)},
	})
	_, pid := s.ready(t)
	ledger, era, probe, bots, tm := startPlaying(t, s.addr, nbots)

	version := buggyVersion
	for u := 1; u <= upgrades; u++ {
		b := build{known: true, fixed: u%2 == 1, version: buggyVersion}
		bin := bins.buggy
		if b.fixed {
			b.version, bin = fixedVersion, bins.fixed
		}
		s.install(t, bin)
		era.set(build{})
		o := s.hup(t)
		newPID := s.succeeded(t, o, pid, nbots+1)
		era.set(b)
		pid, version = newPID, b.version
		probe.c.expect(t, "STATUS", probe.status(version, pid))
		probe.checkRule(t, b.fixed)
		tm.waitPast(t, tm.marks(), 3)
		blackout, _ := o.end.Num("blackout_ms")
		t.Logf("upgrade %d to gen %d (%s, pid %d): blackout %.1f ms", u, o.gen, version, pid, blackout)
	}

	if err := tm.halt(); err != nil {
		t.Fatal(err)
	}
	total := int64(0)
	for _, b := range append(bots, probe) {
		b.c.expect(t, "STATUS", b.status(version, pid))
		total += b.done.Load()
	}
	ledger.check(t, probe.c)
	t.Logf("%d commands; %d purchases refused (fixed build), %d on credit (buggy build)", total, ledger.refused.Load(), ledger.owing.Load())
	if ledger.refused.Load() == 0 || ledger.owing.Load() == 0 {
		t.Errorf("each build's rule should have shown: %d refused, %d on credit", ledger.refused.Load(), ledger.owing.Load())
	}
	s.signal(15)
	if code := s.wait(); code != 0 {
		t.Errorf("supervisor exited with %d after SIGTERM", code)
	}
}

// checkRule shows which build runs: the probe buys potions until it cannot
// pay; the fixed build then refuses, the buggy one sells on credit.
func (b *bot) checkRule(t *testing.T, fixed bool) {
	t.Helper()
	for range 2 + max(b.coin, 0)/prices[potion] {
		before := b.coin
		if err := b.step("BUY 1001"); err != nil {
			t.Fatal(err)
		}
		if before >= prices[potion] {
			continue
		}
		switch refused := b.coin == before; {
		case fixed && !refused:
			t.Fatalf("the fixed build sold a potion to a player with %d coins", before)
		case !fixed && refused:
			t.Fatalf("the buggy build refused a potion to a player with %d coins", before)
		}
		return
	}
	t.Fatalf("coin never fell below a potion's price: %d", b.coin)
}
