package luapatch

import (
	"errors"
	"testing"

	lua "github.com/yuin/gopher-lua"
)

// Compile needs no LState: a server compiles the new source off the lock
// that guards its LState, then PatchCompiled patches as PatchSource does,
// state kept; a syntax error comes from Compile, naming the file and line.
func TestCompileThenPatch(t *testing.T) {
	L := lua.NewState()
	defer L.Close()
	p := New(L, Options{})
	v1 := []byte("local n = 0\nlocal M = {}\nfunction M.bump() n = n + 1 return n end\nreturn M\n")
	v2 := []byte("local n = 0\nlocal M = {}\nfunction M.bump() n = n + 10 return n end\nreturn M\n")
	mod, err := p.LoadSource("m", "m.lua", v1)
	if err != nil {
		t.Fatal(err)
	}
	bump := func() lua.LValue {
		if err := L.CallByParam(lua.P{Fn: mod.RawGetString("bump"), NRet: 1, Protect: true}); err != nil {
			t.Fatal(err)
		}
		defer L.Pop(1)
		return L.Get(-1)
	}
	bump() // n = 1
	c, err := Compile("m", "m.lua", v2)
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.PatchCompiled(c)
	if err != nil {
		t.Fatal(err)
	}
	if got := bump(); got != lua.LNumber(11) || p.Version("m") != Version(v2) || res.Unchanged {
		t.Errorf("after the patch: bump() = %v, version %s, unchanged %v; want 11 (state kept), %s", got, p.Version("m"), res.Unchanged, Version(v2))
	}
	_, err = Compile("m", "m.lua", []byte("local M = {}\nfunction M.bump( return 1 end\nreturn M\n"))
	var perr *Error
	if !errors.As(err, &perr) || perr.Stage != StageCompile || perr.File != "m.lua" || perr.Line != 2 {
		t.Errorf("syntax error: %v, want a compile *Error at m.lua:2", err)
	}
}
