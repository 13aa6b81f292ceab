package luapatch

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"

	lua "github.com/yuin/gopher-lua"
)

// A plan is everything a patch will change, worked out without changing
// anything the running code can see: the only things it touches before the
// swap are the new functions, which nothing outside the patch holds yet.
type plan struct {
	res     *Result
	sandbox *lua.LTable // environment the new top-level code ran in
	env     *lua.LTable // the module's environment, which new functions get at the swap

	fresh   map[*lua.FunctionProto]bool // prototypes compiled from the new source
	written map[string]bool             // upvalue names some new function assigns to

	cells  map[*lua.Upvalue]*lua.Upvalue     // new upvalue -> the old one it joins
	tables map[*lua.LTable]*lua.LTable       // new table -> the old one it patches
	funcs  map[*lua.LFunction]*lua.LFunction // new function -> the old one it replaces

	sets      []tableSet
	cellSets  []cellSet
	installed []*lua.LFunction // new functions that the swap makes reachable
	seenF     map[*lua.LFunction]bool
	seenT     map[*lua.LTable]bool
	seenCell  map[*lua.Upvalue]bool
}

type tableSet struct {
	t    *lua.LTable
	k, v lua.LValue
	path string
}

type cellSet struct {
	c    *lua.Upvalue
	v    lua.LValue
	path string
}

func newPlan(res *Result, chunk *lua.LFunction, sandbox, env *lua.LTable) *plan {
	p := &plan{
		res: res, sandbox: sandbox, env: env,
		fresh: map[*lua.FunctionProto]bool{}, written: map[string]bool{},
		cells: map[*lua.Upvalue]*lua.Upvalue{}, tables: map[*lua.LTable]*lua.LTable{},
		funcs: map[*lua.LFunction]*lua.LFunction{},
		seenF: map[*lua.LFunction]bool{}, seenT: map[*lua.LTable]bool{}, seenCell: map[*lua.Upvalue]bool{},
	}
	p.scan(chunk.Proto)
	return p
}

// scan records proto and its nested prototypes as fresh, and the names of
// the upvalues they assign.
func (p *plan) scan(proto *lua.FunctionProto) {
	p.fresh[proto] = true
	for _, inst := range proto.Code {
		if int(inst>>26) == lua.OP_SETUPVAL { // opcode: top 6 bits; B: low 9 bits
			if b := int(inst & 0x1ff); b < len(proto.DbgUpvalues) {
				p.written[proto.DbgUpvalues[b]] = true
			}
		}
	}
	for _, nested := range proto.FunctionPrototypes {
		p.scan(nested)
	}
}

// isFresh reports whether v is a closure of the new source.
func (p *plan) isFresh(v lua.LValue) bool {
	fn, ok := v.(*lua.LFunction)
	return ok && !fn.IsG && p.fresh[fn.Proto]
}

// build matches the new module table with the old one, then joins the
// upvalues of every new function the swap will install.
func (p *plan) build(old, nu *lua.LTable) {
	p.pairTable(old, nu, "", true)
	for _, s := range p.sets {
		p.install(s.v, s.path)
	}
	for _, s := range p.cellSets {
		p.install(s.v, s.path)
	}
	for _, fn := range p.installed {
		for i, c := range fn.Upvalues {
			if oc, ok := p.cells[c]; ok {
				fn.Upvalues[i] = oc
			}
		}
	}
	for _, k := range sortedKeys(p.sandbox) {
		p.res.Globals = append(p.res.Globals, keyPath("", k))
	}
}

// pairTable matches new table nt with old table ot. byKey: nt was reached by
// key path from the module table, not through an upvalue.
func (p *plan) pairTable(ot, nt *lua.LTable, path string, byKey bool) {
	if ot == nt {
		return
	}
	if prev, ok := p.tables[nt]; ok {
		if prev != ot {
			p.res.Ambiguous = append(p.res.Ambiguous, orRoot(path))
		}
		return
	}
	p.tables[nt] = ot
	root := path == "" && byKey
	for _, k := range sortedKeys(nt) {
		if root && k == lua.LString(checkHook) {
			continue
		}
		p.pairEntry(ot, k, ot.RawGet(k), nt.RawGet(k), keyPath(path, k), byKey)
	}
	if !byKey {
		return
	}
	for _, k := range sortedKeys(ot) {
		if fn, ok := ot.RawGet(k).(*lua.LFunction); ok && !fn.IsG && nt.RawGet(k) == lua.LNil {
			p.res.Kept = append(p.res.Kept, keyPath(path, k))
		}
	}
}

// pairEntry decides what happens to key k of old table ot.
func (p *plan) pairEntry(ot *lua.LTable, k, ov, nv lua.LValue, path string, byKey bool) {
	switch n := nv.(type) {
	case *lua.LFunction:
		if !p.isFresh(n) { // a builtin or another module's function: data
			if ov == lua.LNil {
				p.set(ot, k, nv, path)
			}
			return
		}
		if of, ok := ov.(*lua.LFunction); ok && !of.IsG {
			p.pairFunc(of, n, path)
		}
		p.set(ot, k, nv, path)
	case *lua.LTable:
		if o, ok := ov.(*lua.LTable); ok {
			p.pairTable(o, n, path, byKey)
		} else if ov == lua.LNil {
			p.set(ot, k, nv, path)
		}
	default:
		if ov == lua.LNil {
			p.set(ot, k, nv, path)
		}
	}
}

// set schedules ot[k] = v for the swap.
func (p *plan) set(ot *lua.LTable, k, v lua.LValue, path string) {
	p.sets = append(p.sets, tableSet{ot, k, v, path})
	if ot.RawGet(k) == lua.LNil {
		p.res.New = append(p.res.New, path)
	} else {
		p.res.Replaced = append(p.res.Replaced, path)
	}
}

// pairFunc matches new function nf with old function of: their upvalues of
// the same name are joined.
func (p *plan) pairFunc(of, nf *lua.LFunction, path string) {
	if prev, ok := p.funcs[nf]; ok {
		if prev != of {
			p.res.Ambiguous = append(p.res.Ambiguous, path)
		}
		return
	}
	p.funcs[nf] = of
	for i, name := range nf.Proto.DbgUpvalues {
		j := slices.Index(of.Proto.DbgUpvalues, name)
		if j < 0 || j >= len(of.Upvalues) || i >= len(nf.Upvalues) {
			continue // absent, reported by install
		}
		p.pairCell(of.Upvalues[j], nf.Upvalues[i], name, path+":"+name)
	}
}

// pairCell joins new upvalue nc (of a variable called name) to old upvalue
// oc, and matches what they hold when that is code or a table.
func (p *plan) pairCell(oc, nc *lua.Upvalue, name, path string) {
	if prev, ok := p.cells[nc]; ok {
		if prev != oc {
			p.res.Ambiguous = append(p.res.Ambiguous, path)
		}
		return
	}
	p.cells[nc] = oc
	if p.written[name] {
		return // state: the old value stays
	}
	switch nv := nc.Value().(type) {
	case *lua.LFunction:
		if !p.isFresh(nv) {
			return
		}
		if of, ok := oc.Value().(*lua.LFunction); ok && !of.IsG {
			p.pairFunc(of, nv, path)
		}
		p.cellSets = append(p.cellSets, cellSet{oc, nv, path})
		p.res.Replaced = append(p.res.Replaced, path)
	case *lua.LTable:
		if ot, ok := oc.Value().(*lua.LTable); ok {
			p.pairTable(ot, nv, path, false)
		}
	}
}

// install walks a value the swap puts in place, to find the new functions
// it makes reachable and the upvalues of theirs that have no old
// counterpart.
func (p *plan) install(v lua.LValue, path string) {
	switch v := v.(type) {
	case *lua.LFunction:
		if !p.isFresh(v) || p.seenF[v] {
			return
		}
		p.seenF[v] = true
		p.installed = append(p.installed, v)
		if path == "" {
			path = fmt.Sprintf("function<%s:%d>", v.Proto.SourceName, v.Proto.LineDefined)
		}
		for i, c := range v.Upvalues {
			if _, joined := p.cells[c]; joined || p.seenCell[c] {
				continue
			}
			p.seenCell[c] = true
			name := "?"
			if i < len(v.Proto.DbgUpvalues) {
				name = v.Proto.DbgUpvalues[i]
			}
			p.res.Absent = append(p.res.Absent, path+":"+name)
			if t, ok := c.Value().(*lua.LTable); ok {
				if ot, paired := p.tables[t]; paired {
					// The module table (or another matched table) under a new
					// name: point it at the live table, not the discarded one.
					p.cellSets = append(p.cellSets, cellSet{c, ot, path + ":" + name})
					continue
				}
			}
			p.install(c.Value(), path+":"+name)
		}
	case *lua.LTable:
		if p.seenT[v] {
			return
		}
		p.seenT[v] = true
		if _, paired := p.tables[v]; paired {
			return // its new functions are installed one by one
		}
		for _, k := range sortedKeys(v) {
			p.install(v.RawGet(k), keyPath(path, k))
		}
		if mt, ok := v.Metatable.(*lua.LTable); ok {
			p.install(mt, path+"<metatable>")
		}
	}
}

// swap applies the plan. It cannot fail.
func (p *plan) swap() {
	for _, s := range p.sets {
		s.t.RawSet(s.k, s.v)
	}
	for _, s := range p.cellSets {
		s.c.SetValue(s.v)
	}
	for _, fn := range p.installed {
		if fn.Env == p.sandbox {
			fn.Env = p.env
		}
	}
}

// sortedKeys returns the keys of t in a stable order: numbers, then strings,
// then the rest by their printed form.
func sortedKeys(t *lua.LTable) []lua.LValue {
	var keys []lua.LValue
	t.ForEach(func(k, _ lua.LValue) { keys = append(keys, k) })
	rank := func(k lua.LValue) int {
		switch k.(type) {
		case lua.LNumber:
			return 0
		case lua.LString:
			return 1
		}
		return 2
	}
	slices.SortStableFunc(keys, func(a, b lua.LValue) int {
		if c := cmp.Compare(rank(a), rank(b)); c != 0 {
			return c
		}
		if x, ok := a.(lua.LNumber); ok {
			return cmp.Compare(x, b.(lua.LNumber))
		}
		return cmp.Compare(a.String(), b.String())
	})
	return keys
}

var identRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// keyPath appends key k to path: "a.b", "a[3]", `a["x y"]`.
func keyPath(path string, k lua.LValue) string {
	if s, ok := k.(lua.LString); ok && identRe.MatchString(string(s)) {
		if path == "" {
			return string(s)
		}
		return path + "." + string(s)
	}
	if _, ok := k.(lua.LString); ok {
		return fmt.Sprintf("%s[%q]", path, k.String())
	}
	return fmt.Sprintf("%s[%s]", path, k.String())
}

func orRoot(path string) string {
	if path == "" {
		return "(module)"
	}
	return path
}
