package game

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestReloadScripts: `supervisor ctl reload` patches the game's scripts in
// the running worker, which keeps its players, its connections and the
// scripts' own state: the buggy shop becomes the fixed one and its count of
// goods sold (SHOP) goes on. A script that does not compile fails the
// reload, names file:line, and the rules before it go on.
func TestReloadScripts(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join("..", "..", "example-game", "gameserver", "scripts")
	install := func(dst, srcFile string, content []byte) {
		t.Helper()
		if content == nil {
			var err error
			if content, err = os.ReadFile(filepath.Join(src, srcFile)); err != nil {
				t.Fatal(err)
			}
		}
		tmp := filepath.Join(dir, "."+dst)
		if err := os.WriteFile(tmp, content, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, dst)); err != nil {
			t.Fatal(err)
		}
	}
	install("game.lua", "game.lua", nil)
	install("shop.lua", "shop.lua", nil)
	control := filepath.Join(t.TempDir(), "control")
	s := startSupervised(t, supervisedOpts{bin: bins.fixed, flags: []string{"--control", control}, workerArgs: []string{"--scripts", dir}})
	_, pid := s.ready(t)
	c := dial(t, s.addr)
	c.expect(t, "LOGIN ann", "OK player=ann coin=100 version="+fixedVersion)
	for i := 1; i <= 11; i++ { // the buggy shop from --scripts, whatever the build embeds
		c.must(t, "BUY 1001")
	}
	c.expect(t, "SHOP", "OK sold=11 goods=1001:potion:10,1002:gourd:2")
	c.expect(t, "STATUS", "OK player=ann coin=-10 bag=1001:11 version="+fixedVersion+" pid="+strconv.Itoa(pid))

	install("shop.lua", "shop_fixed.lua", nil)
	if code, stdout, stderr := ctlRun(t, control, "reload", "--wait"); code != 0 {
		t.Fatalf("ctl reload --wait: exit status %d\n%s%s", code, stdout, stderr)
	}
	s.waitRe(&s.at, regexp.MustCompile(`gameserver\[`+strconv.Itoa(pid)+`\]: reload: scripts \S+ → \S+ \(fixed shop: BUY checks the balance\)`))
	c.expect(t, "BUY 1001", "ERR not enough coin")
	c.expect(t, "SHOP", "OK sold=11 goods=1001:potion:10,1002:gourd:2")
	c.expect(t, "WORK", "OK coin=-5")

	install("shop.lua", "", []byte("local M = {}\nfunction M.buy(\nreturn M\n"))
	code, stdout, stderr := ctlRun(t, control, "reload", "--wait")
	if code == 0 {
		t.Errorf("ctl reload --wait with a syntax error: exit status 0\n%s%s", stdout, stderr)
	}
	s.waitRe(&s.at, regexp.MustCompile(`gameserver\[`+strconv.Itoa(pid)+`\]: reload failed: scripts: `+regexp.QuoteMeta(filepath.Join(dir, "shop.lua"))+`:3: `))
	if !strings.Contains(stdout+stderr, "shop.lua:3") {
		t.Logf("ctl reload's output does not name shop.lua:3:\n%s%s", stdout, stderr)
	}
	c.expect(t, "BUY 1002", "ERR not enough coin")
	c.expect(t, "WORK", "OK coin=0")
	c.expect(t, "STATUS", "OK player=ann coin=0 bag=1001:11 version="+fixedVersion+" pid="+strconv.Itoa(pid))
}
