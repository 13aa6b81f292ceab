package main

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	lua "github.com/yuin/gopher-lua"

	"github.com/procswitch/supervisor/luapatch"
)

// embedded holds the scripts shipped with the binary: the rules when no
// --scripts directory is given.
//
//go:embed scripts/*.lua
var embedded embed.FS

// modules are the Lua modules of the rules, in load order; in a --scripts
// directory module m is the file m.lua.
var modules = []string{"game", "shop"}

// scripts says where the rules are read from: a --scripts directory, or the
// embedded files (dir ""), where the shop is defaultShop (the build's).
type scripts struct {
	dir string
}

// read returns module's chunk name (what errors show) and source.
func (s scripts) read(module string) (file string, src []byte, err error) {
	if s.dir == "" {
		name := module + ".lua"
		if module == "shop" {
			name = defaultShop
		}
		file = "scripts/" + name
		src, err = embedded.ReadFile(file)
		return file, src, err
	}
	file = filepath.Join(s.dir, module+".lua")
	src, err = os.ReadFile(file)
	return file, src, err
}

func (s scripts) String() string {
	if s.dir == "" {
		return "embedded scripts (game.lua, " + defaultShop + ")"
	}
	return "--scripts " + s.dir
}

// rules is the game's logic in Lua: one LState and its modules. The game
// calls it, and patches it, only with the world's lock held (see doc.go).
type rules struct {
	L       *lua.LState
	patcher *luapatch.Patcher
	from    scripts
	version string   // scriptsVersion of the sources loaded or last patched
	srcs    [][]byte // those sources, in module order
	rule    string   // shop.rule: the BUY rule's name, for the log
	goods   []int    // the catalogue's item ids, in its order

	// The functions the game calls, looked up once per load or patch.
	work, status, buy, unknown, report *lua.LFunction
}

// loadRules makes a Lua state and loads the modules from s into it. An
// error names the file and line.
func loadRules(s scripts) (*rules, error) {
	r := &rules{L: newState(), from: s}
	r.patcher = luapatch.New(r.L, luapatch.Options{})
	srcs := make([][]byte, len(modules))
	for i, m := range modules {
		file, src, err := s.read(m)
		if err != nil {
			r.L.Close()
			return nil, fmt.Errorf("scripts: %w", err)
		}
		if _, err := r.patcher.LoadSource(m, file, src); err != nil {
			r.L.Close()
			return nil, scriptError(err)
		}
		srcs[i] = src
	}
	if err := r.bind(); err != nil {
		r.L.Close()
		return nil, err
	}
	r.version, r.srcs = scriptsVersion(srcs), srcs
	return r, nil
}

// reload reads the scripts again and patches the modules in place
// (luapatch): their functions are replaced, their state (module-level
// locals such as shop.lua's sold) kept. It is all or nothing: if a file
// cannot be read, or a module fails to patch or lacks a function the game
// calls, the modules already patched are patched back to their previous
// sources and the old rules go on; the error names file:line. Call it with
// the world's lock held, or, to hold the lock for less time, call prepare
// without it and apply with it. summary says what changed, for the log.
func (r *rules) reload() (summary string, err error) {
	u, err := r.prepare()
	if err != nil {
		return "", err
	}
	return r.apply(u)
}

// update is a reload's new scripts, read and compiled.
type update struct {
	files    []string
	srcs     [][]byte
	compiled []*luapatch.Compiled // nil for a module whose source has not changed
}

// prepare reads and compiles the scripts: the slow part of a reload (the
// disk, and the compiler, most of a patch's time), which needs no lock, so
// that commands go on meanwhile. A module whose source is the one loaded
// is not compiled: apply leaves it as it is, as a patch would. It reads the
// patcher's versions without the lock, so prepare and apply must run on
// one goroutine, the only one that patches.
func (r *rules) prepare() (*update, error) {
	u := &update{files: make([]string, len(modules)), srcs: make([][]byte, len(modules)),
		compiled: make([]*luapatch.Compiled, len(modules))}
	for i, m := range modules {
		var err error
		if u.files[i], u.srcs[i], err = r.from.read(m); err != nil {
			return nil, fmt.Errorf("scripts: %w", err)
		}
		if luapatch.Version(u.srcs[i]) == r.patcher.Version(m) {
			continue
		}
		if u.compiled[i], err = luapatch.Compile(m, u.files[i], u.srcs[i]); err != nil {
			return nil, scriptError(err)
		}
	}
	return u, nil
}

// apply patches the prepared scripts in, with the world's lock held.
func (r *rules) apply(u *update) (summary string, err error) {
	files, srcs := u.files, u.srcs
	var done []string
	for i, m := range modules {
		if u.compiled[i] == nil {
			done = append(done, m+" unchanged")
			continue
		}
		res, err := r.patcher.PatchCompiled(u.compiled[i])
		if err == nil {
			done = append(done, res.Summary())
			continue
		}
		return "", r.undo(i, files, scriptError(err))
	}
	if err := r.bind(); err != nil {
		return "", r.undo(len(modules), files, err)
	}
	r.version, r.srcs = scriptsVersion(srcs), srcs
	return strings.Join(done, "; "), nil
}

// undo patches the first n modules back to their previous sources, after
// the reload failed with err.
func (r *rules) undo(n int, files []string, err error) error {
	for i := range n {
		if _, uerr := r.patcher.PatchSource(modules[i], files[i], r.srcs[i]); uerr != nil {
			return fmt.Errorf("%w; additionally, patching %s back: %v", err, modules[i], uerr)
		}
	}
	if berr := r.bind(); berr != nil {
		return fmt.Errorf("%w; additionally, after patching back: %v", err, berr)
	}
	return err
}

// newState is a Lua state with the libraries the rules may use: no io, no
// os.
func newState() *lua.LState {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
	} {
		L.Push(L.NewFunction(lib.open))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	return L
}

// scriptsVersion is the version of a set of sources: the first 12 hex
// digits of the SHA-256 of their concatenation in module order, which is
// `cat game.lua shop.lua | sha256sum | cut -c1-12` in a scripts directory.
func scriptsVersion(srcs [][]byte) string {
	h := sha256.New()
	for _, src := range srcs {
		h.Write(src)
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// scriptError says where a script failed: file:line first.
func scriptError(err error) error {
	var perr *luapatch.Error
	if !errors.As(err, &perr) {
		return fmt.Errorf("scripts: %w", err)
	}
	loc := perr.File
	if perr.Line > 0 {
		loc = fmt.Sprintf("%s:%d", loc, perr.Line)
	}
	return fmt.Errorf("scripts: %s: %s (module %s, %s)", loc, perr.Msg, perr.Module, perr.Stage)
}

// bind looks up the functions and values the game uses; after a patch too,
// since a patch may add what was missing.
func (r *rules) bind() error {
	game, shop := r.module("game"), r.module("shop")
	var err error
	fn := func(mod *lua.LTable, module, name string) *lua.LFunction {
		f, ok := mod.RawGetString(name).(*lua.LFunction)
		if !ok && err == nil {
			err = fmt.Errorf("scripts: %s: %s.%s is not a function", r.file(module), module, name)
		}
		return f
	}
	work, status := fn(game, "game", "work"), fn(game, "game", "status")
	buy, unknown, report := fn(shop, "shop", "buy"), fn(shop, "shop", "unknown"), fn(shop, "shop", "report")
	goods, gerr := catalogueIDs(shop)
	if err == nil && gerr != nil {
		err = fmt.Errorf("scripts: %s: %w", r.file("shop"), gerr)
	}
	if err != nil {
		return err
	}
	r.work, r.status = work, status
	r.buy, r.unknown, r.report = buy, unknown, report
	r.goods = goods
	r.rule = lua.LVAsString(shop.RawGetString("rule"))
	return nil
}

func (r *rules) module(name string) *lua.LTable {
	loaded, _ := r.L.GetField(r.L.Get(lua.RegistryIndex), "_LOADED").(*lua.LTable)
	if loaded == nil {
		return r.L.NewTable()
	}
	mod, ok := loaded.RawGetString(name).(*lua.LTable)
	if !ok {
		return r.L.NewTable()
	}
	return mod
}

func (r *rules) file(module string) string {
	file, _, _ := r.from.read(module)
	return file
}

// catalogueIDs reads shop.goods: the ids of the goods, each a positive
// integer, once.
func catalogueIDs(shop *lua.LTable) ([]int, error) {
	goods, ok := shop.RawGetString("goods").(*lua.LTable)
	if !ok {
		return nil, errors.New("shop.goods is not a table")
	}
	var ids []int
	for i := 1; i <= goods.Len(); i++ {
		g, _ := goods.RawGetInt(i).(*lua.LTable)
		var id int64
		ok := g != nil
		if ok {
			id, ok = toInt(g.RawGetString("id"))
		}
		if !ok || id <= 0 || id > 999_999_999 {
			return nil, fmt.Errorf("shop.goods[%d].id is not an item id (a number from 1 to 999999999)", i)
		}
		ids = append(ids, int(id))
	}
	return ids, nil
}

// toInt converts a Lua number that holds an integer.
func toInt(v lua.LValue) (int64, bool) {
	n, ok := v.(lua.LNumber)
	f := float64(n)
	if !ok || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false
	}
	return int64(f), true
}

// call calls fn with args, protected, and leaves nret results on the stack
// (the caller pops them). A Lua error leaves the stack as it was.
func (r *rules) call(fn *lua.LFunction, nret int, args ...lua.LValue) error {
	err := r.L.CallByParam(lua.P{Fn: fn, NRet: nret, Protect: true}, args...)
	if err != nil {
		return fmt.Errorf("script error: %s", firstLine(err.Error()))
	}
	return nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// errResult is a script that returned something the game cannot use.
func errResult(fn, what string, got lua.LValue) error {
	return fmt.Errorf("script error: %s returned %s %q, want %s", fn, got.Type(), got.String(), what)
}

// doWork runs game.work(coin, exp): the coin, exp and level after a WORK.
func (r *rules) doWork(coin, exp int64) (newCoin, newExp, level int64, err error) {
	if err := r.call(r.work, 3, lua.LNumber(coin), lua.LNumber(exp)); err != nil {
		return 0, 0, 0, err
	}
	L := r.L
	defer L.Pop(3)
	var ok [3]bool
	newCoin, ok[0] = toInt(L.Get(-3))
	newExp, ok[1] = toInt(L.Get(-2))
	level, ok[2] = toInt(L.Get(-1))
	for i, good := range ok {
		if !good {
			return 0, 0, 0, errResult("game.work", "integers coin, exp, level", L.Get(-3+i))
		}
	}
	return newCoin, newExp, level, nil
}

// doStatus runs game.status: the STATUS reply.
func (r *rules) doStatus(id, bag string, coin int64, version, pid lua.LValue) (string, error) {
	if err := r.call(r.status, 1, lua.LString(id), lua.LNumber(coin), lua.LString(bag), version, pid); err != nil {
		return "", err
	}
	defer r.L.Pop(1)
	s, ok := r.L.Get(-1).(lua.LString)
	if !ok {
		return "", errResult("game.status", "a string", r.L.Get(-1))
	}
	return string(s), nil
}

// doBuy runs shop.buy(id, coin, remain): the price to pay, or why not
// (refused, not "").
func (r *rules) doBuy(id int, coin, remain int64) (price int64, refused string, err error) {
	if err := r.call(r.buy, 2, lua.LNumber(id), lua.LNumber(coin), lua.LNumber(remain)); err != nil {
		return 0, "", err
	}
	L := r.L
	defer L.Pop(2)
	if v := L.Get(-2); v == lua.LNil {
		why := L.Get(-1)
		if why == lua.LNil {
			return 0, "", errResult("shop.buy", "a price, or nil and a reason", why)
		}
		return 0, why.String(), nil
	}
	price, ok := toInt(L.Get(-2))
	if !ok {
		return 0, "", errResult("shop.buy", "an integer price, or nil and a reason", L.Get(-2))
	}
	return price, "", nil
}

// doUnknown runs shop.unknown(id): "" for an item the shop sells, else the
// error.
func (r *rules) doUnknown(id int) (string, error) {
	if err := r.call(r.unknown, 1, lua.LNumber(id)); err != nil {
		return "", err
	}
	defer r.L.Pop(1)
	if v := r.L.Get(-1); v != lua.LNil {
		return v.String(), nil
	}
	return "", nil
}

// doReport runs shop.report(): the SHOP reply.
func (r *rules) doReport() (string, error) {
	if err := r.call(r.report, 1); err != nil {
		return "", err
	}
	defer r.L.Pop(1)
	s, ok := r.L.Get(-1).(lua.LString)
	if !ok {
		return "", errResult("shop.report", "a string", r.L.Get(-1))
	}
	return string(s), nil
}

// close frees the Lua state.
func (r *rules) close() { r.L.Close() }
