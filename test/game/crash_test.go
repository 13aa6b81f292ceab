package game

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// servingRe matches the game's line once worker pid serves.
func servingRe(pid int) *regexp.Regexp {
	return regexp.MustCompile(fmt.Sprintf(`gameserver\[%d\]: version \S+ \(.*\), pid %d: serving on (\S+)`, pid, pid))
}

// TestKill9RestoresAutosave: the game worker killed with SIGKILL is
// restarted by the supervisor; the new worker restores the last autosave
// and says so, with its age, and every player's coins and bag saved by it
// are there when the players log in again.
func TestKill9RestoresAutosave(t *testing.T) {
	const nbots = 20
	s := startSupervised(t, supervisedOpts{
		bin:        bins.fixed,
		flags:      []string{"--ready-timeout", "30s"},
		workerArgs: []string{"--autosave", "200ms", "--stock", fmt.Sprint(bigStock)},
	})
	_, pid := s.ready(t)
	ledger, era := newLedger(bigStock), &era{}
	era.set(build{known: true, fixed: true, version: fixedVersion})
	bots := make([]*bot, nbots)
	changes := 0
	for i := range bots {
		bots[i] = newBot(t, s.addr, fmt.Sprintf("bot%03d", i), ledger, era, fixedVersion)
	}
	tm := startTeam(bots)
	defer tm.halt()
	tm.waitPast(t, tm.marks(), 50)
	if err := tm.halt(); err != nil {
		t.Fatal(err)
	}
	for _, b := range bots {
		changes += b.changes
	}

	// The autosaves log how many changes each saved: wait until they have
	// saved every change the bots made.
	saved := regexp.MustCompile(fmt.Sprintf(`gameserver\[%d\]: autosave: saved (\d+) players \((\d+) changes\)`, pid))
	for at, n := 0, 0; n < changes; {
		m := s.waitRe(&at, saved)
		c, _ := strconv.Atoi(m[2])
		n += c
		if n > changes {
			t.Fatalf("autosaves saved %d changes, the bots made %d", n, changes)
		}
	}
	s.at = s.Log.Len()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	exited := s.waitMsg(&s.at, "worker exited", func(l line) bool { return l.Int("pid") == pid })
	if !strings.Contains(exited.Str("status"), "killed") {
		t.Errorf("worker exited with status %q, want it killed", exited.Str("status"))
	}
	s.waitMsg(&s.at, "worker restarting", nil)
	// A restart in the same generation logs no "generation ready": the
	// worker's own lines say what it restored and that it serves.
	m := s.waitRe(&s.at, coldRestoreRe)
	newPID, _ := strconv.Atoi(m[1])
	if newPID == pid || m[2] != "autosave" || m[4] != strconv.Itoa(nbots) || m[5] != "0" {
		t.Fatalf("restarted worker says %q; want a new worker to restore the autosave's %d players", m[0], nbots)
	}
	s.waitRe(&s.at, servingRe(newPID))
	t.Logf("worker %d killed; worker %d restored an autosave from %s ago: %d changes by %d players", pid, newPID, m[3], changes, nbots)

	// Every connection died with the worker; the players come back.
	if reply, err := bots[0].c.do("STATUS"); err == nil {
		t.Fatalf("a connection of the killed worker answered %q", reply)
	}
	c := dial(t, s.addr)
	for _, b := range bots {
		b.c = dial(t, s.addr)
		b.c.expect(t, "LOGIN "+b.id, fmt.Sprintf("OK player=%s coin=%d version=%s", b.id, b.coin, fixedVersion))
		b.c.expect(t, "STATUS", b.status(fixedVersion, newPID))
	}
	c.must(t, "LOGIN checker")
	ledger.check(t, c)
}
