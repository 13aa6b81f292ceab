package game

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestLevelPatchUnderLoad: with 50 bots buying without pause, a new
// game.lua that changes what WORK pays is patched into the running worker
// by `ctl reload --wait`: exit status 0, the same worker, no bot
// disconnected or surprised, and the probe's WORK pays the new amount. Then
// a patch whose shop.lua fails in its top-level code (with a game.lua that
// changes the pay again) makes the reload exit 1 naming shop.lua and the
// line, and the rules before it go on: the patched pay, the buggy shop.
func TestLevelPatchUnderLoad(t *testing.T) {
	const nbots = 50
	lv := startLevels(t, nbots)
	lv.probe.work(t, workPay)

	lv.put(t, "game.lua", gameWithPay(t, patchedPay))
	if code, out := lv.reload(t); code != 0 {
		t.Fatalf("ctl reload --wait: exit status %d\n%s", code, out)
	}
	lv.reloaded(t)
	lv.probe.work(t, patchedPay)
	lv.probe.c.expect(t, "STATUS", lv.probe.status(buggyVersion, lv.pid))
	lv.tm.waitPast(t, lv.tm.marks(), 3)

	// shop_fixed.lua that stops at load: were it applied, BUY would check
	// the balance; game.lua in the same reload would pay 9.
	src := shipped(t, "shop_fixed.lua")
	head := []byte("local M = {}\n")
	i := bytes.Index(src, head)
	if i < 0 {
		t.Fatalf("shop_fixed.lua has no %q", head)
	}
	line := bytes.Count(src[:i+len(head)], []byte("\n")) + 1
	broken := append(append(src[:i+len(head):i+len(head)], "error(\"boom\")\n"...), src[i+len(head):]...)
	lv.put(t, "game.lua", gameWithPay(t, 9))
	lv.put(t, "shop.lua", broken)
	code, out := lv.reload(t)
	if code != 1 {
		t.Errorf("ctl reload --wait with a failing shop.lua: exit status %d, want 1\n%s", code, out)
	}
	t.Logf("ctl reload --wait: exit status %d: %s", code, strings.TrimSpace(out))
	at := ":" + strconv.Itoa(line) + ":"
	if !strings.Contains(out, "shop.lua"+at) {
		t.Errorf("ctl reload's output does not name shop.lua%s\n%s", at, out)
	}
	lv.waitRe(&lv.at, regexp.MustCompile(`gameserver\[`+strconv.Itoa(lv.pid)+`\]: reload failed: scripts: \S*shop\.lua`+at+`.*boom`))
	lv.probe.work(t, patchedPay)
	lv.probe.checkRule(t, false)
	lv.probe.c.expect(t, "STATUS", lv.probe.status(buggyVersion, lv.pid))
	lv.tm.waitPast(t, lv.tm.marks(), 3)
	lv.finish(t, buggyVersion)
}

// TestLevelPatchThenUpgrade: a rule patched by a reload outlives handover
// upgrades, to the other build and then to the same one, each new worker
// run on the same --scripts directory: the probe's WORK pays the patched
// amount, and the shop is the directory's (buggy), not the fixed build's
// embedded default. The bots buy throughout and keep their connections.
func TestLevelPatchThenUpgrade(t *testing.T) {
	const nbots = 50
	lv := startLevels(t, nbots)
	lv.probe.work(t, workPay)
	lv.put(t, "game.lua", gameWithPay(t, patchedPay))
	if code, out := lv.reload(t); code != 0 {
		t.Fatalf("ctl reload --wait: exit status %d\n%s", code, out)
	}
	lv.reloaded(t)
	lv.probe.work(t, patchedPay)

	for u, bin := range []string{bins.fixed, bins.fixed} {
		lv.supervised.install(t, bin)
		o := lv.hup(t)
		lv.pid = lv.succeeded(t, o, lv.pid, nbots+1)
		lv.probe.c.expect(t, "STATUS", lv.probe.status(fixedVersion, lv.pid))
		lv.probe.work(t, patchedPay)
		lv.probe.checkRule(t, false)
		lv.tm.waitPast(t, lv.tm.marks(), 3)
		t.Logf("upgrade %d to gen %d (%s, pid %d)", u+1, o.gen, fixedVersion, lv.pid)
	}
	lv.finish(t, fixedVersion)
}
