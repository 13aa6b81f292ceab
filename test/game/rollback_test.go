package game

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// coldRestoreRe is a worker's log line after a cold start (a rollback, a
// crash restart) restored a snapshot.
var coldRestoreRe = regexp.MustCompile(`gameserver\[(\d+)\]: restored (handover snapshot|autosave|shutdown snapshot) from (\S+) ago: (\d+) players, (\d+) connections resumed`)

var helperGotRe = regexp.MustCompile(`helper\[(\d+)\]: got (\d+) connections`)

// TestRollback: a new build that takes the handover and then fails to
// restore, by exiting or by never becoming ready, is rolled back: the
// supervisor starts the previous build again (from the file it held open,
// although the path now names the failed build) on the saved snapshot and
// the stored connections. Every bot keeps its connection and its coins and
// plays on, on the old code: its version and its shop rule.
func TestRollback(t *testing.T) {
	const nbots = 50
	dir := t.TempDir()
	helperFile := filepath.Join(dir, "helper")
	s := startSupervised(t, supervisedOpts{
		bin:        bins.buggy,
		env:        []string{helperEnv + "=" + helperFile},
		flags:      []string{"--ready-timeout", "3s", "--drain-timeout", "30s"},
		workerArgs: []string{"--autosave", "1s", "--stock", fmt.Sprint(bigStock)},
	})
	_, pid := s.ready(t)
	ledger, era, probe, bots, tm := startPlaying(t, s.addr, nbots)

	// fail installs the helper, upgrades to it, and checks the rollback to
	// the build b that ran before.
	fail := func(helper string, b build) {
		t.Helper()
		if err := os.WriteFile(helperFile, []byte(helper), 0o644); err != nil {
			t.Fatal(err)
		}
		s.install(t, bins.helper)
		era.set(build{})
		o := s.hup(t)
		if o.ok {
			t.Fatalf("upgrade to the %s helper succeeded", helper)
		}
		if !o.end.Bool("rolled_back") {
			t.Fatalf("upgrade failed without a rollback: %s (%s)", o.end.Str("reason"), o.end.Str("kind"))
		}
		at := o.started
		got := s.waitRe(&at, helperGotRe)
		if got[2] != strconv.Itoa(nbots+1) {
			t.Fatalf("the %s helper got %s connections, want %d", helper, got[2], nbots+1)
		}
		s.waitMsg(&at, "rolling back to the previous binary", nil)
		gen, newPID := s.ready(t)
		m := s.waitRe(&at, coldRestoreRe)
		if m[1] != strconv.Itoa(newPID) || m[2] != "handover snapshot" || m[5] != strconv.Itoa(nbots+1) {
			t.Fatalf("rollback gen %d (pid %d) restored: %q; want the handover snapshot with %d connections", gen, newPID, m[0], nbots+1)
		}
		era.set(b)
		pid = newPID
		probe.c.expect(t, "STATUS", probe.status(b.version, pid))
		probe.checkRule(t, b.fixed)
		tm.waitPast(t, tm.marks(), 3)
		t.Logf("%s: %s; rolled back to %s in gen %d, pid %d", helper, o.end.Str("reason"), b.version, gen, pid)
	}

	fail("restore-fails", build{known: true, version: buggyVersion})

	s.install(t, bins.fixed)
	era.set(build{})
	fixed := build{known: true, fixed: true, version: fixedVersion}
	pid = s.succeeded(t, s.hup(t), pid, nbots+1)
	era.set(fixed)
	probe.c.expect(t, "STATUS", probe.status(fixed.version, pid))
	probe.checkRule(t, true)
	tm.waitPast(t, tm.marks(), 3)

	fail("restore-hangs", fixed)

	if err := tm.halt(); err != nil {
		t.Fatal(err)
	}
	for _, b := range append(bots, probe) {
		b.c.expect(t, "STATUS", b.status(fixed.version, pid))
	}
	ledger.check(t, probe.c)
}
