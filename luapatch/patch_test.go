package luapatch

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	lua "github.com/yuin/gopher-lua"
)

// setup returns an LState with module "mod" loaded from v1, and its Patcher.
func setup(t testing.TB, v1 string, opts Options) (*lua.LState, *Patcher) {
	t.Helper()
	L := lua.NewState()
	t.Cleanup(L.Close)
	p := New(L, opts)
	if _, err := p.LoadSource("mod", "mod.lua", []byte(v1)); err != nil {
		t.Fatalf("load v1: %v", err)
	}
	return L, p
}

// do runs Lua code with M bound to the module table.
func do(t testing.TB, L *lua.LState, code string) {
	t.Helper()
	if code == "" {
		return
	}
	if err := L.DoString(`local M = package.loaded["mod"]` + "\n" + code); err != nil {
		t.Fatalf("%v\nin:\n%s", err, code)
	}
}

const counterV1 = `
local M = {}
local count = 0
function M.inc() count = count + 1 return count end
function M.get() return count end
function M.version() return 1 end
return M
`

func TestPatchSemantics(t *testing.T) {
	tests := []struct {
		name         string
		v1, v2       string
		before       string // Lua run on v1, with M the module
		after        string // Lua run after the patch (asserts)
		opts         Options
		replaced     []string // each must be in Result.Replaced
		absent       []string // Result.Absent, exactly
		added        []string // each must be in Result.New
		kept         []string // Result.Kept, exactly
		globals      []string // Result.Globals, exactly
		wantErr      string   // substring of the error; "" for success
		wantStage    Stage
		wantLocation string // "file:line" the error names
	}{{
		name: "a counter upvalue survives",
		v1:   counterV1,
		v2: `
local M = {}
local count = 0
function M.inc() count = count + 10 return count end
function M.get() return count end
function M.version() return 2 end
return M
`,
		before:   `M.inc() M.inc() M.inc()`,
		after:    `assert(M.version() == 2); assert(M.get() == 3); assert(M.inc() == 13); assert(M.get() == 13)`,
		replaced: []string{"get", "inc", "version"},
	}, {
		name: "a renamed local is absent and starts with the new value",
		v1:   counterV1,
		v2: `
local M = {}
local hits = 100
function M.inc() hits = hits + 1 return hits end
function M.get() return hits end
function M.version() return 2 end
return M
`,
		before: `M.inc() M.inc()`,
		after:  `assert(M.get() == 100); assert(M.inc() == 101)`,
		absent: []string{"get:hits"},
	}, {
		name: "a new function shares the live upvalues",
		v1:   counterV1,
		v2: `
local M = {}
local count = 0
function M.inc() count = count + 1 return count end
function M.get() return count end
function M.version() return 2 end
function M.reset() local was = count; count = 0; return was end
return M
`,
		before: `M.inc() M.inc() M.inc()`,
		after:  `assert(M.reset() == 3); assert(M.get() == 0); assert(M.inc() == 1)`,
		added:  []string{"reset"},
	}, {
		name: "local functions are replaced and keep their upvalues, also for old closures",
		v1: `
local M = {}
local count = 0
local function bump(n) count = count + n end
function M.inc() bump(1) return count end
function M.get() return count end
function M.make_cb() return function() bump(1) end end
return M
`,
		v2: `
local M = {}
local count = 0
local function bump(n) count = count + 2 * n end
function M.inc() bump(1) return count end
function M.get() return count end
function M.make_cb() return function() bump(1) end end
return M
`,
		before: `M.inc() M.inc(); CB = M.make_cb(); CB()`,
		after: `assert(M.get() == 3, M.get()); assert(M.inc() == 5)
			CB() assert(M.get() == 7, "an old closure calls the new bump: " .. M.get())
			local cb2 = M.make_cb(); cb2(); assert(M.get() == 9)`,
		replaced: []string{"inc", "inc:bump"},
	}, {
		name: "a nested function's own upvalues are joined",
		v1: `
local M = {}
local hits = 0
local function make()
	local calls = 0
	return function() calls = calls + 1; hits = hits + 1; return calls end
end
local tick = make()
function M.tick() return tick() end
function M.hits() return hits end
return M
`,
		v2: `
local M = {}
local hits = 0
local function make()
	local calls = 0
	return function() calls = calls + 1; hits = hits + 1; return calls * 100 end
end
local tick = make()
function M.tick() return tick() end
function M.hits() return hits end
return M
`,
		before:   `M.tick() M.tick()`,
		after:    `local r = M.tick(); assert(r == 300, r); assert(M.hits() == 3)`,
		replaced: []string{"tick", "tick:tick"},
	}, {
		name: "a local assigned by functions is state, even when it holds a function",
		v1: `
local M = {}
local function idle() return "idle" end
local function busy() return "busy" end
local state = idle
function M.go() state = busy end
function M.cur() return state() end
return M
`,
		v2: `
local M = {}
local function idle() return "IDLE" end
local function busy() return "BUSY" end
local state = idle
function M.go() state = busy end
function M.cur() return state() end
return M
`,
		before: `M.go(); assert(M.cur() == "busy")`,
		after:  `assert(M.cur() == "busy", "state keeps the old value"); M.go(); assert(M.cur() == "BUSY")`,
	}, {
		name: "live objects keep their metatable and get the new methods",
		v1: `
local M = {}
local Player = {}
Player.__index = Player
function Player:hello() return "hi " .. self.name end
function M.new(name) return setmetatable({name = name}, Player) end
return M
`,
		v2: `
local M = {}
local Player = {}
Player.__index = Player
function Player:hello() return "hello " .. self.name end
function Player:bye() return "bye " .. self.name end
function M.new(name) return setmetatable({name = name}, Player) end
return M
`,
		before:   `P1 = M.new("ann"); assert(P1:hello() == "hi ann")`,
		after:    `assert(P1:hello() == "hello ann"); assert(P1:bye() == "bye ann"); assert(getmetatable(M.new("bo")) == getmetatable(P1))`,
		replaced: []string{"new:Player.hello"},
		added:    []string{"new:Player.bye"},
	}, {
		name: "nested tables keep their identity, data is kept, new keys are added",
		v1: `
local M = {handlers = {}, config = {timeout = 30}}
function M.handlers.login() return "v1" end
function M.handlers.logout() return "v1" end
return M
`,
		v2: `
local M = {handlers = {}, config = {timeout = 60, retries = 3}}
function M.handlers.login() return "v2" end
function M.handlers.ping() return "pong" end
return M
`,
		before: `H = M.handlers; M.config.timeout = 45`,
		after: `assert(M.handlers == H); assert(H.login() == "v2"); assert(H.ping() == "pong")
			assert(H.logout() == "v1", "kept"); assert(M.config.timeout == 45); assert(M.config.retries == 3)`,
		replaced: []string{"handlers.login"},
		added:    []string{"config.retries", "handlers.ping"},
		kept:     []string{"handlers.logout"},
	}, {
		name: "top-level code runs in a sandbox, new functions use the real globals",
		v1:   counterV1,
		v2: `
local M = {}
local count = 0
LEAKED = "sandbox"
string = nil
function M.inc() count = count + 1 return count end
function M.get() return count end
function M.version() SEEN = string.format("%d", 2) return 2 end
return M
`,
		after:   `assert(LEAKED == nil); assert(string.format); assert(M.version() == 2); assert(SEEN == "2")`,
		globals: []string{"LEAKED"},
	}, {
		name: "the module table under a new local name is the live one",
		v1:   counterV1,
		v2: `
local mod = {}
local count = 0
function mod.inc() count = count + 1 return count end
function mod.get() return count end
function mod.version() return 2 end
function mod.twice() mod.inc() return mod.inc() end
return mod
`,
		before: `M.inc()`,
		after:  `M.extra = function() return 7 end; assert(M.twice() == 3); assert(package.loaded.mod == M)`,
		absent: []string{"twice:mod"},
	}, {
		name: "recursive local functions and builtins in locals",
		v1: `
local M = {}
local insert = table.insert
local log = {}
local function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) end
function M.fact(n) insert(log, n) return fact(n) end
function M.calls() return #log end
return M
`,
		v2: `
local M = {}
local insert = table.insert
local log = {}
local function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) + 0.5 end
function M.fact(n) insert(log, n) return fact(n) end
function M.calls() return #log end
return M
`,
		before:   `assert(M.fact(3) == 6)`,
		after:    `local f = M.fact(3); assert(f == 8, tostring(f)); assert(M.calls() == 2)`,
		replaced: []string{"fact", "fact:fact"},
	}, {
		name: "a coroutine suspended in old code resumes in old code, on the shared state",
		v1: `
local M = {}
local count = 0
function M.worker() while true do count = count + 1; coroutine.yield("v1") end end
function M.get() return count end
return M
`,
		v2: `
local M = {}
local count = 0
function M.worker() while true do count = count + 100; coroutine.yield("v2") end end
function M.get() return count end
return M
`,
		before: `CO = coroutine.create(M.worker); assert(select(2, coroutine.resume(CO)) == "v1")`,
		after: `local _, v = coroutine.resume(CO); assert(v == "v1"); assert(M.get() == 2)
			local co2 = coroutine.create(M.worker); local _, v2 = coroutine.resume(co2); assert(v2 == "v2"); assert(M.get() == 102)`,
	}, {
		name:         "a syntax error changes nothing and names file:line",
		v1:           counterV1,
		v2:           "local M = {}\nlocal count = 0\nfunction M.inc() count = count + 1 return count end\nfunction M.get( return count end\nreturn M\n",
		before:       `M.inc()`,
		after:        `assert(M.version() == 1); assert(M.inc() == 2)`,
		wantErr:      "syntax",
		wantStage:    StageCompile,
		wantLocation: "mod.lua:4",
	}, {
		name:         "a runtime error in top-level code changes nothing and names file:line",
		v1:           counterV1,
		v2:           "local M = {}\nlocal count = 0\nfunction M.inc() return 99 end\nlocal x = nil\nx.boom = 1\nreturn M\n",
		before:       `M.inc()`,
		after:        `assert(M.version() == 1); assert(M.inc() == 2)`,
		wantErr:      "nil",
		wantStage:    StageRun,
		wantLocation: "mod.lua:5",
	}, {
		name: "a failing __check changes nothing and names file:line",
		v1:   counterV1,
		v2: `local M = {}
local count = 0
function M.inc() count = count + 1 return count end
function M.get() return count end
function M.version() return 2 end
function M.__check(old, new)
	assert(new.get() == old.get(), "the new get sees the live count")
	error("refused: version " .. old.version())
end
return M
`,
		before:       `M.inc()`,
		after:        `assert(M.version() == 1); assert(M.inc() == 2); assert(M.__check == nil)`,
		wantErr:      "refused: version 1",
		wantStage:    StageHook,
		wantLocation: "mod.lua:8",
	}, {
		name: "a passing __check is not installed",
		v1:   counterV1,
		v2: `local M = {}
local count = 0
function M.inc() count = count + 1 return count end
function M.get() return count end
function M.version() return 2 end
function M.__check(old, new) assert(new.get() == 1) end
return M
`,
		before: `M.inc()`,
		after:  `assert(M.version() == 2); assert(M.__check == nil)`,
	}, {
		name: "a refusing Go check changes nothing",
		v1:   counterV1,
		v2:   strings.ReplaceAll(counterV1, "count", "hits"),
		opts: Options{Check: func(r *Result) error {
			if len(r.Absent) > 0 {
				return errors.New("absent upvalues: " + strings.Join(r.Absent, ", "))
			}
			return nil
		}},
		before:       `M.inc()`,
		after:        `assert(M.inc() == 2)`,
		wantErr:      "absent upvalues",
		wantStage:    StageCheck,
		wantLocation: "mod.lua",
	}, {
		name:         "a chunk that returns no table changes nothing",
		v1:           counterV1,
		v2:           "function inc() end\n",
		after:        `assert(M.version() == 1)`,
		wantErr:      "returned a nil",
		wantStage:    StageRun,
		wantLocation: "mod.lua",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			L, p := setup(t, tt.v1, tt.opts)
			do(t, L, tt.before)
			v1 := p.Version("mod")
			res, err := p.PatchSource("mod", "mod.lua", []byte(tt.v2))
			if tt.wantErr != "" {
				var perr *Error
				if !errors.As(err, &perr) {
					t.Fatalf("err = %v, want an *Error", err)
				}
				if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), tt.wantLocation+":") || perr.Stage != tt.wantStage {
					t.Fatalf("err = %q (stage %q), want %q at %s in stage %q", err, perr.Stage, tt.wantErr, tt.wantLocation, tt.wantStage)
				}
				if p.Version("mod") != v1 {
					t.Errorf("version changed to %s on a failed patch", p.Version("mod"))
				}
				do(t, L, tt.after)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Log(res.Summary())
			do(t, L, tt.after)
			if res.Version != Version([]byte(tt.v2)) || p.Version("mod") != res.Version || res.Previous != v1 {
				t.Errorf("versions: result %s (previous %s), patcher %s", res.Version, res.Previous, p.Version("mod"))
			}
			contains(t, "Replaced", res.Replaced, tt.replaced)
			contains(t, "New", res.New, tt.added)
			equal(t, "Absent", res.Absent, tt.absent)
			equal(t, "Kept", res.Kept, tt.kept)
			equal(t, "Globals", res.Globals, tt.globals)
		})
	}
}

func contains(t *testing.T, what string, got, want []string) {
	t.Helper()
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("%s = %q, want it to contain %q", what, got, w)
		}
	}
}

func equal(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) || !slices.Equal(got, want) {
		t.Errorf("%s = %q, want %q", what, got, want)
	}
}

func TestPatchSameVersionIsUnchanged(t *testing.T) {
	L, p := setup(t, counterV1, Options{})
	do(t, L, `M.inc(); F = M.inc`)
	res, err := p.PatchSource("mod", "mod.lua", []byte(counterV1))
	if err != nil || !res.Unchanged {
		t.Fatalf("res = %+v, err = %v; want Unchanged", res, err)
	}
	do(t, L, `assert(M.inc == F); assert(M.inc() == 2)`)
	if !strings.Contains(res.Summary(), "nothing to do") {
		t.Errorf("summary %q", res.Summary())
	}
}

func TestPatchTwiceKeepsState(t *testing.T) {
	L, p := setup(t, counterV1, Options{})
	do(t, L, `M.inc()`)
	for i := 2; i <= 4; i++ {
		src := strings.Replace(counterV1, "return 1", "return "+string(rune('0'+i)), 1)
		if _, err := p.PatchSource("mod", "mod.lua", []byte(src)); err != nil {
			t.Fatal(err)
		}
		do(t, L, `assert(M.inc() == `+string(rune('0'+i))+`)`)
	}
}

func TestPatchErrors(t *testing.T) {
	L := lua.NewState()
	defer L.Close()
	p := New(L, Options{})
	if _, err := p.PatchSource("nope", "nope.lua", []byte("return {}")); !errors.Is(err, ErrNotLoaded) {
		t.Errorf("patch of a module never loaded: %v, want ErrNotLoaded", err)
	}
	if err := L.DoString(`package.loaded.num = 3`); err != nil {
		t.Fatal(err)
	}
	if _, err := p.PatchSource("num", "num.lua", []byte("return {}")); !errors.Is(err, ErrNotTable) {
		t.Errorf("patch of a number: %v, want ErrNotTable", err)
	}
	if _, err := p.LoadSource("num", "num.lua", []byte("return {}")); !errors.Is(err, ErrLoaded) {
		t.Errorf("load of a loaded module: %v, want ErrLoaded", err)
	}
	if _, err := p.Patch("mod", filepath.Join(t.TempDir(), "missing.lua")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("patch from a missing file: %v, want os.ErrNotExist", err)
	}
}

func TestPatchTimeout(t *testing.T) {
	_, p := setup(t, counterV1, Options{Timeout: 50e6})
	_, err := p.PatchSource("mod", "mod.lua", []byte("while true do end"))
	if err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("err = %v, want a deadline error", err)
	}
	if p.l.Context() != nil {
		t.Error("the LState keeps the patch's context")
	}
}

func TestPatchFromFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "shop.lua")
	if err := os.WriteFile(file, []byte(counterV1), 0o644); err != nil {
		t.Fatal(err)
	}
	L := lua.NewState()
	defer L.Close()
	p := New(L, Options{})
	if _, err := p.Load("shop", file); err != nil {
		t.Fatal(err)
	}
	bad := "local M = {}\nerror('no')\nreturn M\n"
	if err := os.WriteFile(file, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := p.Patch("shop", file)
	if err == nil || !strings.Contains(err.Error(), file+":2: no") {
		t.Fatalf("err = %v, want it to name %s:2", err, file)
	}
}

func TestPatchReloadIdiomBuildsANewTable(t *testing.T) {
	v1 := "local M = package.loaded[...] or {}\nlocal n = 0\nfunction M.inc() n = n + 1 return n end\nreturn M\n"
	L, p := setup(t, v1, Options{})
	do(t, L, `M.inc(); F = M.inc`)
	broken := strings.Replace(v1, "return M", "error('late')\nreturn M", 1)
	if _, err := p.PatchSource("mod", "mod.lua", []byte(broken)); err == nil {
		t.Fatal("want an error")
	}
	do(t, L, `assert(M.inc == F, "the failed version's top-level code reached the live table"); assert(M.inc() == 2)`)
	res, err := p.PatchSource("mod", "mod.lua", []byte(strings.Replace(v1, "n + 1", "n + 5", 1)))
	if err != nil {
		t.Fatal(err)
	}
	do(t, L, `assert(M.inc() == 7); assert(package.loaded.mod == M)`)
	t.Log(res.Summary())
}

func TestPatchLiveTableIsRefused(t *testing.T) {
	v1 := "Shop = Shop or {}\nlocal n = 0\nfunction Shop.inc() n = n + 1 return n end\nreturn Shop\n"
	_, p := setup(t, v1, Options{})
	if _, err := p.PatchSource("mod", "mod.lua", []byte(v1+"-- v2\n")); !errors.Is(err, ErrLiveTable) {
		t.Fatalf("err = %v, want ErrLiveTable", err)
	}
}
