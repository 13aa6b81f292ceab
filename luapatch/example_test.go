package luapatch_test

import (
	"errors"
	"fmt"

	"github.com/procswitch/supervisor/luapatch"
	lua "github.com/yuin/gopher-lua"
)

const shopV1 = `
local M = {}
local sold = 0
function M.sell(n) sold = sold + n return sold end
return M
`

const shopV2 = `
local M = {}
local sold = 0
local refunds = 0
function M.sell(n) sold = sold + 2 * n return sold end -- the fix
function M.refund(n) refunds = refunds + n; sold = sold - n return sold end
return M
`

func Example() {
	L := lua.NewState()
	defer L.Close()
	p := luapatch.New(L, luapatch.Options{})
	if _, err := p.LoadSource("shop", "scripts/shop.lua", []byte(shopV1)); err != nil {
		panic(err)
	}
	if err := L.DoString(`local shop = require "shop"; shop.sell(5)`); err != nil {
		panic(err)
	}

	res, err := p.PatchSource("shop", "scripts/shop.lua", []byte(shopV2))
	if err != nil {
		panic(err)
	}
	fmt.Println("replaced:", res.Replaced, "new:", res.New, "absent:", res.Absent)
	if err := L.DoString(`local shop = require "shop"; print(shop.sell(1), shop.refund(3))`); err != nil {
		panic(err)
	}

	// A broken version changes nothing and says where it broke.
	_, err = p.PatchSource("shop", "scripts/shop.lua", []byte("local M = {}\nM.sell = nil + 1\nreturn M\n"))
	var perr *luapatch.Error
	if errors.As(err, &perr) {
		fmt.Printf("%s:%d %s\n", perr.File, perr.Line, perr.Stage)
	}
	// Output:
	// replaced: [sell] new: [refund] absent: [refund:refunds]
	// 7	4
	// scripts/shop.lua:2 top-level code
}

// A game exposes patching to its own scripts (an admin command, say) through
// a Go function; it runs on the LState's goroutine, as Patch must.
func ExamplePatcher_Patch_fromLua() {
	L := lua.NewState()
	defer L.Close()
	p := luapatch.New(L, luapatch.Options{})
	sources := map[string]string{"v1": shopV1, "v2": shopV2} // stands in for the files
	if _, err := p.LoadSource("shop", "shop.lua", []byte(sources["v1"])); err != nil {
		panic(err)
	}
	L.SetGlobal("hotpatch", L.NewFunction(func(L *lua.LState) int {
		res, err := p.PatchSource(L.CheckString(1), "shop.lua", []byte(sources[L.CheckString(2)]))
		if err != nil {
			L.Push(lua.LNil)
			L.Push(lua.LString(err.Error()))
			return 2
		}
		L.Push(lua.LString(res.Version))
		return 1
	}))
	err := L.DoString(`
		local shop = require "shop"
		shop.sell(1)
		assert(hotpatch("shop", "v2"))
		print(shop.sell(1))
	`)
	fmt.Println(err, p.Version("shop") == luapatch.Version([]byte(shopV2)))
	// Output:
	// 3
	// <nil> true
}
