package luapatch

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	lua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/parse"
)

var (
	// ErrNotLoaded: Patch was given a module that package.loaded does not
	// hold. Load it first (Patcher.Load or require).
	ErrNotLoaded = errors.New("luapatch: module not loaded: load it first with Load or require")
	// ErrLoaded: Load was given a module that is already loaded. Use Patch.
	ErrLoaded = errors.New("luapatch: module already loaded: use Patch to change it")
	// ErrNotTable: the module (old or new) is not a table of functions.
	ErrNotTable = errors.New("luapatch: module is not a table")
	// ErrLiveTable: the new version's chunk returned the running module
	// table (found through a global or another module), so nothing could be
	// joined. Unlike the other errors, this one cannot promise that nothing
	// changed: the top-level code may have written into the live table.
	ErrLiveTable = errors.New("luapatch: the new chunk returned the live module table, and its top-level code may have changed it: build a new table (local M = {}) and return it")
)

// Stage says where a patch failed.
type Stage string

// The stages of a patch, in order.
const (
	StageRead    Stage = "read"           // reading the file
	StageCompile Stage = "compile"        // syntax error
	StageRun     Stage = "top-level code" // error in the chunk, or it returned no table
	StageCheck   Stage = "check"          // Options.Check refused
	StageHook    Stage = "__check"        // the module's __check refused
)

// Error is the error of a failed Load or Patch. Nothing changed.
type Error struct {
	Module string
	Stage  Stage
	File   string // where the error was raised: the chunk name, or the file of a function it called
	Line   int    // 0 when unknown
	Msg    string // the message, without the location
	Err    error  // the underlying error: a *lua.ApiError (with StackTrace) or the Check's error
}

func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
	}
	return fmt.Sprintf("luapatch: %s: %s: %s: %s; nothing changed", e.Module, e.Stage, loc, e.Msg)
}

func (e *Error) Unwrap() error { return e.Err }

// whereRe matches the "file:line: " prefix gopher-lua puts on runtime errors.
var whereRe = regexp.MustCompile(`^(.+?):(\d+): `)

// newError describes err, raised while stage ran the chunk named file.
func newError(module string, stage Stage, file string, err error) *Error {
	e := &Error{Module: module, Stage: stage, File: file, Msg: err.Error(), Err: err}
	var api *lua.ApiError
	if !errors.As(err, &api) {
		return e
	}
	var perr *parse.Error
	var cerr *lua.CompileError
	switch {
	case errors.As(api.Cause, &perr):
		e.Line = max(perr.Pos.Line, 0) // parse.EOF is negative
		e.Msg = strings.TrimSpace(perr.Message)
		if perr.Token != "" {
			e.Msg += " near '" + perr.Token + "'"
		}
	case errors.As(api.Cause, &cerr):
		e.Line, e.Msg = cerr.Line, cerr.Message
	default:
		e.Msg = api.Object.String()
		if m := whereRe.FindStringSubmatch(e.Msg); m != nil {
			e.File = m[1]
			e.Line, _ = strconv.Atoi(m[2])
			e.Msg = e.Msg[len(m[0]):]
		}
	}
	return e
}
