package luapatch

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	lua "github.com/yuin/gopher-lua"
)

// genModule describes a random module: n functions f1..fn, each with its
// own counter c<i> and all adding to a shared total; some live in M.sub,
// some count through a local helper h<i>.
type genModule struct {
	n      int
	sub    []bool
	helper []bool
}

// failure is how a generated version breaks, if it does.
type failure int

const (
	valid failure = iota
	syntaxError
	runtimeError
	hookRefuses
	goCheckRefuses
	numFailures
)

func newGenModule(rng *rand.Rand) genModule {
	g := genModule{n: 1 + rng.IntN(8)}
	for range g.n {
		g.sub = append(g.sub, rng.IntN(3) == 0)
		g.helper = append(g.helper, rng.IntN(2) == 0)
	}
	return g
}

func (g genModule) fname(i int) string {
	if g.sub[i] {
		return fmt.Sprintf("M.sub.f%d", i)
	}
	return fmt.Sprintf("M.f%d", i)
}

// source is version tag of the module. Failures are placed after a random
// number of function definitions; errLine is the line the error must name.
// peek, if >= 0, adds a new function peek<peek> that reads counter peek.
func (g genModule) source(rng *rand.Rand, tag int, fail failure, peek int) (src string, errLine int) {
	var lines []string
	add := func(format string, args ...any) { lines = append(lines, fmt.Sprintf(format, args...)) }
	add("local M = {sub = {}}")
	add("local total = 0")
	for i := range g.n {
		add("local c%d = 0", i)
	}
	breakAt := rng.IntN(g.n + 1)
	for i := range g.n {
		if i == breakAt {
			switch fail {
			case syntaxError:
				add("function M.broken(n end")
				errLine = len(lines)
			case runtimeError:
				add("local nothing = nil; nothing.field = %d", tag)
				errLine = len(lines)
			}
		}
		if g.helper[i] {
			add("local function h%d(n) c%d = c%d + n; total = total + n; return %d end", i, i, i, tag)
			add("function %s(n) local ht = h%d(n); return %d, c%d, ht end", g.fname(i), i, tag, i)
		} else {
			add("function %s(n) c%d = c%d + n; total = total + n; return %d, c%d, %d end", g.fname(i), i, i, tag, i, tag)
		}
	}
	if breakAt == g.n && (fail == syntaxError || fail == runtimeError) {
		add("error('late failure')")
		errLine = len(lines)
	}
	add("function M.sum() return total end")
	if peek >= 0 {
		add("function M.peek%d() return c%d end", peek, peek)
	}
	switch fail {
	case hookRefuses:
		add("function M.__check(old, new)")
		add("  assert(new.sum() == old.sum())")
		add("  error('refused by the hook')")
		errLine = len(lines)
		add("end")
	case valid, goCheckRefuses:
		if rng.IntN(2) == 0 {
			add("function M.__check(old, new) assert(new.sum() == old.sum(), 'sum') end")
		}
	}
	add("return M")
	return strings.Join(lines, "\n") + "\n", errLine
}

// state is what the test expects of the module.
type state struct {
	tag    int
	counts []int
	total  int
}

// checkAll calls every function once and checks that all run the code of
// the expected version and see the expected counters.
func checkAll(t *testing.T, L *lua.LState, g genModule, st *state, rng *rand.Rand, when string) {
	t.Helper()
	mod := L.GetField(L.Get(lua.RegistryIndex), "_LOADED").(*lua.LTable).RawGetString("mod").(*lua.LTable)
	for i := range g.n {
		tbl := mod
		if g.sub[i] {
			tbl = mod.RawGetString("sub").(*lua.LTable)
		}
		n := 1 + rng.IntN(5)
		err := L.CallByParam(lua.P{Fn: tbl.RawGetString(fmt.Sprintf("f%d", i)), NRet: 3, Protect: true}, lua.LNumber(n))
		if err != nil {
			t.Fatalf("%s: f%d: %v", when, i, err)
		}
		tag, c, htag := L.Get(-3), L.Get(-2), L.Get(-1)
		L.Pop(3)
		st.counts[i] += n
		st.total += n
		if tag != lua.LNumber(st.tag) || htag != lua.LNumber(st.tag) {
			t.Fatalf("%s: f%d runs version %v (helper %v), want every function at version %d", when, i, tag, htag, st.tag)
		}
		if c != lua.LNumber(st.counts[i]) {
			t.Fatalf("%s: f%d counter = %v, want %d", when, i, c, st.counts[i])
		}
	}
	if err := L.CallByParam(lua.P{Fn: mod.RawGetString("sum"), NRet: 1, Protect: true}); err != nil {
		t.Fatalf("%s: sum: %v", when, err)
	}
	if got := L.Get(-1); got != lua.LNumber(st.total) {
		t.Fatalf("%s: total = %v, want %d", when, got, st.total)
	}
	L.Pop(1)
}

// patchAtomic generates a module from seed and patches it steps times with
// random valid and broken versions. After every attempt either all functions
// run the new version or all run the old one, and no counter lost a count.
func patchAtomic(t *testing.T, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, seed>>32|1))
	g := newGenModule(rng)
	refuse := false
	L := lua.NewState()
	defer L.Close()
	p := New(L, Options{Check: func(*Result) error {
		if refuse {
			return errors.New("refused by Go")
		}
		return nil
	}})
	src, _ := g.source(rng, 1, valid, -1)
	if _, err := p.LoadSource("mod", "mod.lua", []byte(src)); err != nil {
		t.Fatalf("load:\n%s\n%v", src, err)
	}
	st := &state{tag: 1, counts: make([]int, g.n)}
	checkAll(t, L, g, st, rng, "after load")
	for step := range steps {
		tag := step + 2
		fail := failure(rng.IntN(int(numFailures)))
		peek := -1
		if fail == valid && rng.IntN(2) == 0 {
			peek = rng.IntN(g.n)
		}
		src, errLine := g.source(rng, tag, fail, peek)
		refuse = fail == goCheckRefuses
		before := p.Version("mod")
		res, err := p.PatchSource("mod", "mod.lua", []byte(src))
		when := fmt.Sprintf("step %d (%v)", step, fail)
		switch {
		case fail == valid && err != nil:
			t.Fatalf("%s: %v\n%s", when, err, src)
		case fail == valid:
			st.tag = tag
			if len(res.Absent) > 0 || p.Version("mod") == before {
				t.Fatalf("%s: %s", when, res.Summary())
			}
		case err == nil:
			t.Fatalf("%s: patch succeeded, want an error\n%s", when, src)
		default:
			var perr *Error
			if !errors.As(err, &perr) || p.Version("mod") != before {
				t.Fatalf("%s: err = %v, version %s (was %s)", when, err, p.Version("mod"), before)
			}
			if errLine > 0 && (perr.File != "mod.lua" || perr.Line != errLine) {
				t.Fatalf("%s: error at %s:%d, want mod.lua:%d: %v\n%s", when, perr.File, perr.Line, errLine, err, src)
			}
		}
		checkAll(t, L, g, st, rng, when)
		if peek >= 0 {
			if err := L.DoString(fmt.Sprintf("assert(package.loaded.mod.peek%d() == %d)", peek, st.counts[peek])); err != nil {
				t.Fatalf("%s: a new function does not see the live counter: %v", when, err)
			}
		}
	}
}

func (f failure) String() string {
	return [...]string{"valid", "syntax error", "runtime error", "hook refuses", "Go check refuses"}[f]
}

// FuzzPatchAtomic: go test -fuzz FuzzPatchAtomic ./luapatch/
// Without -fuzz, the seeds below run as a normal test.
func FuzzPatchAtomic(f *testing.F) {
	for seed := range uint64(16) {
		f.Add(seed, uint8(12))
	}
	f.Add(uint64(0xdeadbeef), uint8(40))
	f.Fuzz(func(t *testing.T, seed uint64, steps uint8) {
		patchAtomic(t, seed, int(steps%64))
	})
}
