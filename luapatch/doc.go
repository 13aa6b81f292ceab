// Package luapatch patches Lua modules in place, inside a running
// github.com/yuin/gopher-lua state, keeping their state: the first level of
// hot update, where the process (and its sockets and players) stays and only
// the code of a module changes.
//
// The semantics follow Silly's silly.patch (collect the upvalues of the old
// and the new functions, join the new ones to the old ones by name, replace
// the functions in the module table), with the steps a server needs around
// it: a sandbox for the new top-level code, a check, an all-or-nothing swap,
// a version per module and a report.
//
//	p := luapatch.New(L, luapatch.Options{})
//	shop, err := p.Load("shop", "scripts/shop.lua") // instead of require "shop"
//	...
//	res, err := p.Patch("shop", "scripts/shop.lua") // after the file changed
//	if err != nil {
//		log.Print(err) // names file:line; nothing changed
//	} else {
//		log.Print(res.Summary())
//	}
//
// # What a patch does
//
//  1. The new source is compiled with the file path as its chunk name, so
//     every error names file:line.
//  2. Its top-level code runs in a fresh environment: a table whose lookups
//     fall back to the module's environment (gopher-lua is Lua 5.1: this is
//     the function environment, what Lua 5.2+ calls _ENV). Globals the
//     top-level code assigns land in that table, not in the running globals;
//     Result.Globals names them. The chunk gets the module name as its
//     argument, as with require, and must return a table.
//  3. The new module table is matched with the old one (package.loaded[name])
//     key by key, recursively through nested tables. Each new function is
//     matched with the old function under the same key path, and each of its
//     upvalues with the old function's upvalue of the same name (the names
//     are FunctionProto.DbgUpvalues). A matched upvalue is joined: the new
//     function gets the very same *lua.Upvalue object as the old one, so it
//     reads and writes the live variable. Matching goes on through upvalues
//     that hold functions or tables (see the rules below). New functions
//     that have no old counterpart are joined too, through the upvalues they
//     share with matched functions: a new function that uses the module's
//     "count" local sees the live count.
//  4. Upvalues of the new code that found no old counterpart are "absent"
//     (Result.Absent, as Silly reports them): they keep the value the new
//     top-level code gave them.
//  5. Options.Check (Go) and then the new module's own __check(old, new)
//     function, if it defines one, may refuse the patch.
//  6. The swap: in one step that cannot fail, the old tables get the new
//     functions, the new functions get the module's environment instead of
//     the sandbox, and the Patcher records the new version. The module table
//     keeps its identity, so every module that holds it sees the new
//     functions.
//
// If any step before the swap fails (a syntax error, an error in the
// top-level code, a refused check), the module, its tables and its upvalues
// are as they were, and the error is an *Error naming the file and line.
// Two things are outside that promise, because they are the script's own
// doing: side effects of the new top-level code on anything it can reach
// through the globals (it runs before any check), and whatever __check
// changes by calling new functions, which are already joined to the live
// upvalues when it runs.
//
// # Rules for script authors
//
// State that survives a patch:
//   - Module-level locals used by the module's functions (upvalues) keep
//     their current values, and everything reachable from them: a table in a
//     local is the same table after the patch, with its contents.
//   - Non-function values in the module table (and in tables reached from it
//     or from such locals) keep their current values; keys that only the new
//     version has are added with the new value. So a new config field appears,
//     a changed one does not: change it in __check or in a later call.
//
// Code that is replaced:
//   - Every function in the module table and in tables nested in it, matched
//     by key path.
//   - A local that holds a function and is never assigned inside any function
//     of the new source ("local function helper") is code: the local itself
//     now holds the new function, so old closures that call helper through
//     that local call the new one too. Its own upvalues are joined the same
//     way.
//   - A local that holds a table ("local mt = {__index = mt_methods}", or the
//     module table under "local M = {}") is matched with the old table and
//     patched like the module table: its functions are replaced, its data
//     kept. This is how methods of live objects change: an object keeps its
//     metatable, and the metatable (or the __index table) is the old table
//     with new functions in it, provided it is reachable from the module
//     table or from such a local under the same name.
//
// What is not carried over, or not replaced:
//   - A renamed local is a new variable: it is absent, with the new initial
//     value. Rename in two steps, or copy the value in __check.
//   - A local that the new code no longer uses is dropped from the new
//     functions' view; its old value lives on as long as something else
//     (old closures, tables) references it.
//   - A local that some function assigns ("state = next_state") is state,
//     even if it holds a function: it keeps its current value, and that
//     function is not matched with anything. The test is by name across the
//     whole new source, so a name assigned in one function makes every local
//     of that name state.
//   - Functions stored in data (callbacks registered with a timer, handlers
//     in a table keyed by id, closures created at run time by old functions)
//     keep running the old code until they are looked up again through the
//     module. Register M.on_tick through a small wrapper that calls
//     M.on_tick, or re-register in __check or in the top-level code.
//   - Functions not compiled from the new source (a builtin, a function of
//     another module stored in the module table) are data: an old entry
//     stays; only a missing one is added.
//   - Old functions the new source no longer defines stay in the module table
//     (Result.Kept). Set them to nil in a later version if they must go.
//   - The top-level code runs again, in the sandbox, on every patch: it must
//     be idempotent or guarded (no second timer, no second listener, no
//     writes to shared tables such as package.loaded). Closures it hands to
//     the outside (registered callbacks) keep the sandbox as environment and
//     are not joined.
//   - While the new top-level code runs, package.loaded[name] is unset, so
//     the idiom "local M = package.loaded[...] or {}" builds a new table.
//     A module that defines its functions as globals ("Shop = Shop or {}"),
//     or that sets package.loaded itself (Lua 5.1's module()), is not
//     supported: its top-level code writes into the live table before any
//     check. A chunk that returns the live table fails with ErrLiveTable.
//   - The key __check of the new module table is the check hook; it is not
//     copied into the module and runs with the new version's own upvalues.
//   - Metatables are not followed: a table's metatable is patched only when
//     it is also reachable by key path or through an upvalue.
//   - A coroutine suspended inside an old function resumes in the old code
//     (its frame holds the old function), on the shared upvalues; the next
//     coroutine started from the module runs the new code.
//
// Nested functions are matched by where they are reachable (a key path, an
// upvalue name), not by their prototype's position in the parent's
// FunctionProto.FunctionPrototypes: closures that do not exist yet need no
// matching, since the new code creates them from the new prototype with its
// already joined upvalues; closures that exist are values, and a position in
// the prototype list shifts as soon as a function is added above.
//
// A rollback is a patch with the older source: the state stays, the code and
// the version go back.
//
// # gopher-lua specifics
//
// LFunction.Upvalues and FunctionProto.DbgUpvalues are exported, so the
// package needs no debug library: it replaces entries of a new function's
// Upvalues slice with the old *lua.Upvalue objects, and sets the value of an
// old upvalue with Upvalue.SetValue. It never constructs an Upvalue (the
// type's fields are unexported) and never changes the Upvalues of a function
// that was not compiled from the new source. A function is "from the new
// source" when its FunctionProto belongs to the prototype tree of the new
// chunk; "assigned inside a function" means an OP_SETUPVAL instruction in
// that tree.
//
// # Concurrency
//
// A *lua.LState is not safe for concurrent use, and neither is a Patcher.
// Call Load and Patch on the goroutine that owns the LState, between two
// pieces of work (for example from the game loop, or from a Go function the
// Lua code calls); the package does not lock. Options.Timeout bounds the
// top-level code and __check through the LState's context.
package luapatch
