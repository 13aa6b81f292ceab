package luapatch

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/parse"
)

// checkHook is the key of the module's own check function: __check(old, new)
// raises an error to refuse the patch.
const checkHook = "__check"

// Options configure a Patcher. The zero value is ready to use.
type Options struct {
	// Check, if not nil, sees the Result of a patch after the new version
	// has loaded and been joined, before anything changes; an error refuses
	// the patch (for example: "no absent upvalues allowed"). nil: no check.
	Check func(*Result) error
	// Timeout bounds the new top-level code and __check, each. Zero: no
	// bound beyond the LState's own context.
	Timeout time.Duration
}

// Patcher loads and patches the Lua modules of one LState and remembers the
// version of each. It must be used on the goroutine that owns the LState.
type Patcher struct {
	l        *lua.LState
	opts     Options
	versions map[string]string
}

// New returns a Patcher for L, whose package library must be open (the
// modules live in package.loaded).
func New(L *lua.LState, opts Options) *Patcher {
	return &Patcher{l: L, opts: opts, versions: map[string]string{}}
}

// Version is the current version of module name ("" if this Patcher has
// neither loaded nor patched it).
func (p *Patcher) Version(name string) string { return p.versions[name] }

// Load loads module name from file, as require would, records its version
// and returns the module table. Its top-level code runs in the LState's
// globals. It fails with ErrLoaded if package.loaded already holds name.
func (p *Patcher) Load(name, file string) (*lua.LTable, error) {
	src, err := os.ReadFile(file)
	if err != nil {
		return nil, &Error{Module: name, Stage: StageRead, File: file, Msg: err.Error(), Err: err}
	}
	return p.LoadSource(name, file, src)
}

// LoadSource is Load with the source given; file is the chunk name that
// errors and tracebacks show.
func (p *Patcher) LoadSource(name, file string, src []byte) (*lua.LTable, error) {
	loaded, ok := p.l.GetField(p.l.Get(lua.RegistryIndex), "_LOADED").(*lua.LTable)
	if !ok {
		return nil, fmt.Errorf("luapatch: %s: package library not open", name)
	}
	if loaded.RawGetString(name) != lua.LNil {
		return nil, fmt.Errorf("%w: %s", ErrLoaded, name)
	}
	mod, err := p.run(name, file, src, nil)
	if err != nil {
		return nil, err
	}
	loaded.RawSetString(name, mod)
	p.versions[name] = Version(src)
	return mod, nil
}

// Patch patches module name in place with the new source in file. On
// success the Result says what changed; on failure nothing changed and the
// error is an *Error (or ErrNotLoaded, ErrNotTable). A source with the
// current version is not run again: the Result says Unchanged.
func (p *Patcher) Patch(name, file string) (*Result, error) {
	src, err := os.ReadFile(file)
	if err != nil {
		return nil, &Error{Module: name, Stage: StageRead, File: file, Msg: err.Error(), Err: err}
	}
	return p.PatchSource(name, file, src)
}

// PatchSource is Patch with the source given; file is the chunk name that
// errors and tracebacks show.
func (p *Patcher) PatchSource(name, file string, src []byte) (*Result, error) {
	if v := Version(src); v == p.versions[name] {
		return &Result{Module: name, File: file, Version: v, Previous: v, Unchanged: true}, nil
	}
	c, err := Compile(name, file, src)
	if err != nil {
		return nil, err
	}
	return p.PatchCompiled(c)
}

// Compiled is a module's new source, parsed and compiled, ready for
// PatchCompiled. Compile needs no LState, so a server compiles on any
// goroutine, outside the lock that guards its LState, and holds that lock
// only for PatchCompiled: most of a patch's time is the compiler's.
type Compiled struct {
	Module, File, Version string

	proto *lua.FunctionProto
}

// Compile parses and compiles src, the new source of module name from file
// (the chunk name errors show). Its errors are as PatchSource's.
func Compile(name, file string, src []byte) (*Compiled, error) {
	chunk, err := parse.Parse(bytes.NewReader(src), file)
	var proto *lua.FunctionProto
	if err == nil {
		proto, err = lua.Compile(chunk, file)
	}
	if err != nil { // as LState.Load reports it, so that newError finds the line
		return nil, newError(name, StageCompile, file, &lua.ApiError{Type: lua.ApiErrorSyntax,
			Object: lua.LString(err.Error()), Cause: err})
	}
	return &Compiled{Module: name, File: file, Version: Version(src), proto: proto}, nil
}

// PatchCompiled patches module c.Module with c, as PatchSource does. It
// runs the new top-level code, so, like every method, it must run on the
// goroutine that owns the LState.
func (p *Patcher) PatchCompiled(c *Compiled) (*Result, error) {
	name, file := c.Module, c.File
	res := &Result{Module: name, File: file, Version: c.Version, Previous: p.versions[name]}
	if res.Version == res.Previous {
		res.Unchanged = true
		return res, nil
	}
	old, err := p.module(name)
	if err != nil {
		return nil, err
	}
	env := moduleEnv(p.l, old)
	sandbox := p.l.NewTable()
	meta := p.l.NewTable()
	meta.RawSetString("__index", env)
	sandbox.Metatable = meta

	chunk := p.l.NewFunctionFromProto(c.proto)
	chunk.Env = sandbox
	nu, err := p.callHidden(name, file, chunk)
	if err != nil {
		return nil, err
	}
	if nu == old {
		return nil, fmt.Errorf("%w: %s (%s)", ErrLiveTable, name, file)
	}
	pl := newPlan(res, chunk, sandbox, env)
	pl.build(old, nu)
	if err := p.check(res, old, nu); err != nil {
		return nil, err
	}
	pl.swap()
	p.versions[name] = res.Version
	return res, nil
}

// module returns package.loaded[name].
func (p *Patcher) module(name string) (*lua.LTable, error) {
	loaded, ok := p.l.GetField(p.l.Get(lua.RegistryIndex), "_LOADED").(*lua.LTable)
	if !ok {
		return nil, fmt.Errorf("%w: %s (package library not open)", ErrNotLoaded, name)
	}
	switch v := loaded.RawGetString(name).(type) {
	case *lua.LTable:
		return v, nil
	case *lua.LNilType:
		return nil, fmt.Errorf("%w: %s", ErrNotLoaded, name)
	default:
		return nil, fmt.Errorf("%w: %s is a %s", ErrNotTable, name, v.Type())
	}
}

// moduleEnv is the environment of the module's functions: that of its first
// Lua function, or the globals.
func moduleEnv(L *lua.LState, mod *lua.LTable) *lua.LTable {
	for _, k := range sortedKeys(mod) {
		if fn, ok := mod.RawGet(k).(*lua.LFunction); ok && !fn.IsG && fn.Env != nil {
			return fn.Env
		}
	}
	return L.Env
}

func (p *Patcher) compile(name, file string, src []byte) (*lua.LFunction, error) {
	fn, err := p.l.Load(bytes.NewReader(src), file)
	if err != nil {
		return nil, newError(name, StageCompile, file, err)
	}
	return fn, nil
}

// run compiles and runs a module in env (nil: the globals).
func (p *Patcher) run(name, file string, src []byte, env *lua.LTable) (*lua.LTable, error) {
	chunk, err := p.compile(name, file, src)
	if err != nil {
		return nil, err
	}
	if env != nil {
		chunk.Env = env
	}
	return p.call(name, file, chunk)
}

// callHidden calls a new version's chunk with package.loaded[name] unset,
// so that the idiom "local M = package.loaded[...] or {}" builds a new table
// instead of changing the live one before the check.
func (p *Patcher) callHidden(name, file string, chunk *lua.LFunction) (*lua.LTable, error) {
	loaded := p.l.GetField(p.l.Get(lua.RegistryIndex), "_LOADED").(*lua.LTable) // module() checked it
	live := loaded.RawGetString(name)
	loaded.RawSetString(name, lua.LNil)
	defer loaded.RawSetString(name, live)
	return p.call(name, file, chunk)
}

// call runs a module chunk, which must return a table.
func (p *Patcher) call(name, file string, chunk *lua.LFunction) (*lua.LTable, error) {
	rets, err := p.pcall(chunk, 1, lua.LString(name))
	if err != nil {
		return nil, newError(name, StageRun, file, err)
	}
	mod, ok := rets[0].(*lua.LTable)
	if !ok {
		err := fmt.Errorf("%w: the chunk returned a %s", ErrNotTable, rets[0].Type())
		return nil, &Error{Module: name, Stage: StageRun, File: file, Msg: err.Error(), Err: err}
	}
	return mod, nil
}

// check runs Options.Check, then the new module's __check(old, new).
func (p *Patcher) check(res *Result, old, nu *lua.LTable) error {
	if p.opts.Check != nil {
		if err := p.opts.Check(res); err != nil {
			return &Error{Module: res.Module, Stage: StageCheck, File: res.File, Msg: err.Error(), Err: err}
		}
	}
	hook, ok := nu.RawGetString(checkHook).(*lua.LFunction)
	if !ok {
		return nil
	}
	if _, err := p.pcall(hook, 0, old, nu); err != nil {
		return newError(res.Module, StageHook, res.File, err)
	}
	return nil
}

// pcall calls fn with args in protected mode, within Options.Timeout, and
// returns nret results.
func (p *Patcher) pcall(fn *lua.LFunction, nret int, args ...lua.LValue) ([]lua.LValue, error) {
	L := p.l
	if p.opts.Timeout > 0 {
		prev := L.Context()
		parent := prev
		if parent == nil {
			parent = context.Background()
		}
		ctx, cancel := context.WithTimeout(parent, p.opts.Timeout)
		L.SetContext(ctx)
		defer func() {
			cancel()
			if prev == nil {
				L.RemoveContext()
			} else {
				L.SetContext(prev)
			}
		}()
	}
	top := L.GetTop()
	defer L.SetTop(top)
	L.Push(fn)
	for _, a := range args {
		L.Push(a)
	}
	if err := L.PCall(len(args), nret, nil); err != nil {
		return nil, err
	}
	rets := make([]lua.LValue, nret)
	for i := range rets {
		rets[i] = L.Get(top + 1 + i)
	}
	return rets, nil
}
