package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The rules as the embedded scripts state them, for the tests' models of
// the replies (TestEmbeddedRules checks that the scripts agree).
const workPay = 5

type good struct {
	id    int
	name  string
	price int64
}

var goods = []good{{1001, "potion", 10}, {1002, "gourd", 2}}

var embeddedGoods = []int{1001, 1002}

func findGood(id int) (good, bool) {
	for _, g := range goods {
		if g.id == id {
			return g, true
		}
	}
	return good{}, false
}

// testRules loads the embedded rules (this build's shop).
func testRules(t testing.TB) *rules {
	t.Helper()
	r, err := loadRules(scripts{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.close)
	return r
}

// scriptsDir writes a scripts directory: the embedded game.lua, and the
// embedded shop script shop as shop.lua; files replaces or adds files.
func scriptsDir(t *testing.T, shop string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for dst, src := range map[string]string{"game.lua": "scripts/game.lua", "shop.lua": "scripts/" + shop} {
		b, err := embedded.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, src := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// testGame is a game on a new world with the rules r.
func testGame(t *testing.T, r *rules, stock int64) *game {
	t.Helper()
	w, err := newWorld(nil, nil, r.goods, stock)
	if err != nil {
		t.Fatal(err)
	}
	return newGame(w, r, "test", 42)
}

// expect runs line as player *who and checks the reply.
func (g *game) expect(t *testing.T, who *string, line, want string) {
	t.Helper()
	if got, _ := g.exec(who, []byte(line)); got != want {
		t.Fatalf("%s: got %q, want %q", line, got, want)
	}
	if top := g.rules.L.GetTop(); top != 0 {
		t.Fatalf("%s: %d values left on the Lua stack", line, top)
	}
}

func TestEmbeddedRules(t *testing.T) {
	r := testRules(t)
	if !slices.Equal(r.goods, embeddedGoods) {
		t.Errorf("goods %v, want %v", r.goods, embeddedGoods)
	}
	if !regexp.MustCompile(`^[0-9a-f]{12}$`).MatchString(r.version) {
		t.Errorf("version %q, want 12 hex digits", r.version)
	}
	g := testGame(t, r, 10)
	who := "ann"
	g.expect(t, &who, "SHOP", "OK sold=0 goods=1001:potion:10,1002:gourd:2")
	g.expect(t, &who, "BUY 1002", "OK coin=98 item=1002 count=1 remain=9")
	g.expect(t, &who, "SHOP", "OK sold=1 goods=1001:potion:10,1002:gourd:2")
}

// TestShopScripts: the two shop scripts give the replies the two builds gave
// before the rules moved to Lua (TestBuyBuggyVsFixed, TestCoinAndStock).
func TestShopScripts(t *testing.T) {
	for _, shop := range []string{"shop.lua", "shop_fixed.lua"} {
		t.Run(shop, func(t *testing.T) {
			r, err := loadRules(scripts{dir: scriptsDir(t, shop, nil)})
			if err != nil {
				t.Fatal(err)
			}
			defer r.close()
			fixed := shop == "shop_fixed.lua"
			if want := map[bool]string{false: "buggy shop: BUY does not check the balance", true: "fixed shop: BUY checks the balance"}[fixed]; r.rule != want {
				t.Errorf("rule %q, want %q", r.rule, want)
			}
			g := testGame(t, r, 5)
			var who string
			g.expect(t, &who, "WORK", "ERR not logged in: LOGIN <player-id> first")
			g.expect(t, &who, "LOGIN poor", "OK player=poor coin=100 version=test")
			g.expect(t, &who, "STATUS", "OK player=poor coin=100 bag= version=test pid=42")
			g.expect(t, &who, "WORK", "OK coin=105")
			g.expect(t, &who, "BUY x1", `ERR bad item id "x1": want a number, such as 1001`)
			g.expect(t, &who, "BUY 1003", "ERR unknown item 1003: the shop sells 1001 (potion), 1002 (gourd)")
			g.expect(t, &who, "STOCK 7", "ERR unknown item 7: the shop sells 1001 (potion), 1002 (gourd)")
			for i := 1; i <= 5; i++ {
				g.expect(t, &who, "BUY 1001", fmt.Sprintf("OK coin=%d item=1001 count=%d remain=%d", 105-10*i, i, 5-i))
			}
			g.expect(t, &who, "BUY 1001", "ERR out of stock: item 1001")
			g.expect(t, &who, "STOCK 1001", "OK item=1001 remain=0")
			for i := 1; i <= 4; i++ {
				g.expect(t, &who, "BUY 1002", fmt.Sprintf("OK coin=%d item=1002 count=%d remain=%d", 55-2*i, i, 5-i))
			}
			if p := g.world.player("poor"); p.level != 1 || p.exp != 1 {
				t.Errorf("level %d exp %d, want 1 and 1", p.level, p.exp)
			}
			p := g.world.player("poor")
			p.coin = 1
			if fixed {
				g.expect(t, &who, "BUY 1002", "ERR not enough coin")
				g.expect(t, &who, "STATUS", "OK player=poor coin=1 bag=1001:5,1002:4 version=test pid=42")
				g.expect(t, &who, "SHOP", "OK sold=9 goods=1001:potion:10,1002:gourd:2")
				return
			}
			g.expect(t, &who, "BUY 1002", "OK coin=-1 item=1002 count=5 remain=0")
			g.expect(t, &who, "STATUS", "OK player=poor coin=-1 bag=1001:5,1002:5 version=test pid=42")
			g.expect(t, &who, "SHOP", "OK sold=10 goods=1001:potion:10,1002:gourd:2")
		})
	}
}

// TestLevelRule: a level per 100 exp, the rule game.lua keeps.
func TestLevelRule(t *testing.T) {
	g := testGame(t, testRules(t), 5)
	who := "w"
	g.expect(t, &who, "STATUS", "OK player=w coin=100 bag= version=test pid=42")
	for range 199 {
		g.exec(&who, []byte("WORK"))
	}
	if p := g.world.player("w"); p.coin != 100+5*199 || p.exp != 199 || p.level != 2 {
		t.Errorf("after 199 WORKs: coin %d exp %d level %d, want 1095, 199, 2", p.coin, p.exp, p.level)
	}
}

// TestScriptErrors: scripts that cannot load fail with one error that
// names the file (and the line, where there is one), and nothing panics.
func TestScriptErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	for _, tc := range []struct {
		name string
		dir  func(t *testing.T) string
		want string // a regexp; DIR stands for the directory
	}{
		{"no such directory", func(*testing.T) string { return missing }, `^scripts: open DIR/game.lua: no such file or directory$`},
		{"no shop", func(t *testing.T) string {
			dir := scriptsDir(t, "shop.lua", nil)
			os.Remove(filepath.Join(dir, "shop.lua"))
			return dir
		}, `^scripts: open DIR/shop.lua: no such file or directory$`},
		{"syntax error", func(t *testing.T) string {
			return scriptsDir(t, "shop.lua", map[string]string{"shop.lua": "local M = {}\n\nfunction M.buy(\n  return 1\nend\nreturn M\n"})
		}, `^scripts: DIR/shop.lua:4: .*\(module shop, compile\)$`},
		{"error in top-level code", func(t *testing.T) string {
			return scriptsDir(t, "shop.lua", map[string]string{"game.lua": "local M = {}\nlocal x = nil\nx.y = 1\nreturn M\n"})
		}, `^scripts: DIR/game.lua:3: .*\(module game, top-level code\)$`},
		{"no module table", func(t *testing.T) string {
			return scriptsDir(t, "shop.lua", map[string]string{"game.lua": "return 42\n"})
		}, `^scripts: DIR/game.lua: .*\(module game, top-level code\)$`},
		{"missing function", func(t *testing.T) string {
			return scriptsDir(t, "shop.lua", map[string]string{"game.lua": "return {status = function() end}\n"})
		}, `^scripts: DIR/game.lua: game.work is not a function$`},
		{"bad catalogue", func(t *testing.T) string {
			src, _ := embedded.ReadFile("scripts/shop.lua")
			return scriptsDir(t, "shop.lua", map[string]string{"shop.lua": strings.Replace(string(src), "id = 1002", `id = "x"`, 1)})
		}, `^scripts: DIR/shop.lua: shop.goods\[2\].id is not an item id`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.dir(t)
			want := regexp.MustCompile(strings.ReplaceAll(tc.want, "DIR", regexp.QuoteMeta(dir)))
			_, err := loadRules(scripts{dir: dir})
			if err == nil || !want.MatchString(err.Error()) {
				t.Fatalf("loadRules: %v, want an error matching %s", err, want)
			}
			// The whole program: exit status 1, that one error, nothing else.
			var log bytes.Buffer
			if code := run([]string{"--scripts", dir, "--listen", "127.0.0.1:0"}, &log); code != exitFail {
				t.Errorf("exit status %d, want %d; log:\n%s", code, exitFail, &log)
			}
			lines := strings.Split(strings.TrimSuffix(log.String(), "\n"), "\n")
			if len(lines) != 1 || !strings.HasSuffix(lines[0], err.Error()) {
				t.Errorf("log %q, want one line ending in %q", log.String(), err)
			}
		})
	}
}

// TestScriptRuntimeError: a rule that fails while it runs answers with
// the error, file:line first, and changes nothing; the game goes on.
func TestScriptRuntimeError(t *testing.T) {
	src, _ := embedded.ReadFile("scripts/shop.lua")
	broken := strings.Replace(string(src), "\tsold = sold + 1\n", "\tsold = sold + nil\n", 1)
	r, err := loadRules(scripts{dir: scriptsDir(t, "shop.lua", map[string]string{"shop.lua": broken})})
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	g := testGame(t, r, 5)
	who := "ann"
	got, _ := g.exec(&who, []byte("BUY 1001"))
	if !regexp.MustCompile(`^ERR script error: .*shop.lua:\d+: .*add operation`).MatchString(got) {
		t.Errorf("BUY: %q, want ERR script error: ...shop.lua:N: ...", got)
	}
	if top := r.L.GetTop(); top != 0 {
		t.Errorf("%d values left on the Lua stack", top)
	}
	g.expect(t, &who, "STATUS", "OK player=ann coin=100 bag= version=test pid=42")
	g.expect(t, &who, "STOCK 1001", "OK item=1001 remain=5")
	g.expect(t, &who, "WORK", "OK coin=105")
}

// BenchmarkExec is the cost of the rules in Lua: one command each, on the
// world, without the network.
func BenchmarkExec(b *testing.B) {
	for _, line := range []string{"WORK", "STATUS", "BUY 1002"} {
		b.Run(line, func(b *testing.B) {
			w, err := newWorld(nil, nil, embeddedGoods, 1<<50)
			if err != nil {
				b.Fatal(err)
			}
			g := newGame(w, testRules(b), "bench", 1)
			who := "bench"
			g.exec(&who, []byte("STATUS"))
			b.ReportAllocs()
			for b.Loop() {
				g.exec(&who, []byte(line))
			}
		})
	}
}

// TestReload: a reload patches the scripts in place. The buggy shop becomes
// the fixed one and keeps its count of goods sold; a script that fails
// leaves the old rules in force, all of them, and the error names
// file:line.
func TestReload(t *testing.T) {
	dir := scriptsDir(t, "shop.lua", nil)
	r, err := loadRules(scripts{dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	g := testGame(t, r, 100)
	who := "ann"
	g.world.player(who).coin = 1
	g.expect(t, &who, "BUY 1001", "OK coin=-9 item=1001 count=1 remain=99")
	g.expect(t, &who, "SHOP", "OK sold=1 goods=1001:potion:10,1002:gourd:2")
	write := func(name, src string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fixed, _ := embedded.ReadFile("scripts/shop_fixed.lua")
	write("shop.lua", string(fixed))
	before := r.version
	summary, err := r.reload()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("reload: %s", summary)
	if r.version == before || r.rule != "fixed shop: BUY checks the balance" {
		t.Errorf("after the reload: version %s (was %s), rule %q", r.version, before, r.rule)
	}
	g.expect(t, &who, "BUY 1001", "ERR not enough coin")
	g.expect(t, &who, "BUY 1002", "ERR not enough coin")
	g.expect(t, &who, "WORK", "OK coin=-4")
	g.expect(t, &who, "SHOP", "OK sold=1 goods=1001:potion:10,1002:gourd:2") // the count survived

	// A new price and a new good, through __check.
	write("shop.lua", strings.Replace(string(fixed), "price = 2 }", "price = 3 },\n\t{ id = 1003, name = \"elixir\", price = 50 }", 1))
	if _, err := r.reload(); err != nil {
		t.Fatal(err)
	}
	g.world.player(who).coin = 100
	g.expect(t, &who, "BUY 1002", "OK coin=97 item=1002 count=1 remain=99")
	g.expect(t, &who, "BUY 1003", "OK coin=47 item=1003 count=1 remain=99")
	g.expect(t, &who, "SHOP", "OK sold=3 goods=1001:potion:10,1002:gourd:3,1003:elixir:50")

	// game.lua would pay 10, but shop.lua does not compile: neither applies.
	good := r.version
	game, _ := embedded.ReadFile("scripts/game.lua")
	write("game.lua", strings.Replace(string(game), "M.pay = 5 ", "M.pay = 10", 1))
	write("shop.lua", "local M = {}\nfunction M.buy(\nreturn M\n")
	_, err = r.reload()
	want := regexp.MustCompile(`^scripts: ` + regexp.QuoteMeta(filepath.Join(dir, "shop.lua")) + `:3: .*\(module shop, compile\)$`)
	if err == nil || !want.MatchString(err.Error()) {
		t.Fatalf("reload: %v, want an error matching %s", err, want)
	}
	if r.version != good {
		t.Errorf("version %s after a failed reload, want %s", r.version, good)
	}
	g.expect(t, &who, "WORK", "OK coin=52")
	g.expect(t, &who, "SHOP", "OK sold=3 goods=1001:potion:10,1002:gourd:3,1003:elixir:50")

	// A shop whose top-level code fails: refused too.
	write("shop.lua", "local M = {}\nerror(\"no shop today\")\nreturn M\n")
	if _, err := r.reload(); err == nil || !strings.Contains(err.Error(), "shop.lua:2: no shop today (module shop, top-level code)") {
		t.Fatalf("reload: %v, want shop.lua:2: no shop today", err)
	}
	g.expect(t, &who, "WORK", "OK coin=57")
	g.expect(t, &who, "BUY 1003", "OK coin=7 item=1003 count=2 remain=98")

	// Both files fixed: the new pay applies.
	write("shop.lua", string(fixed))
	if _, err := r.reload(); err != nil {
		t.Fatal(err)
	}
	g.expect(t, &who, "WORK", "OK coin=17")
}
