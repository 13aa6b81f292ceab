package luapatch

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// Result says what a patch did, or, when Options.Check sees it, what it is
// about to do. Paths name table keys from the module table ("f",
// "handlers.login", "[3]") and upvalues with a colon ("f:helper" is the
// local helper that f uses).
type Result struct {
	Module   string
	File     string
	Version  string // version of the new source (see Version)
	Previous string // version before the patch; "" if this Patcher never saw one

	// Unchanged: the source has the module's current version; nothing ran
	// and nothing changed. The lists below are empty.
	Unchanged bool

	Replaced  []string // old functions replaced by new ones, whose upvalues were joined
	New       []string // keys the old tables did not have, added with the new value
	Absent    []string // upvalues of the new code with no old counterpart: they start with the new value
	Kept      []string // old functions of the module the new source does not define: they stay, running old code
	Globals   []string // globals the new top-level code assigned: they stayed in its sandbox
	Ambiguous []string // new upvalues or functions that matched two different old ones; the first match (in key order) won
}

// Summary is a one-line account of the result, for the log.
func (r *Result) Summary() string {
	from := r.Previous
	if from == "" {
		from = "?"
	}
	if r.Unchanged {
		return fmt.Sprintf("luapatch: %s (%s) already at %s, nothing to do", r.Module, r.File, r.Version)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "luapatch: %s (%s) %s -> %s: %d replaced, %d new, %d absent",
		r.Module, r.File, from, r.Version, len(r.Replaced), len(r.New), len(r.Absent))
	list(&b, "absent", r.Absent)
	list(&b, "kept", r.Kept)
	list(&b, "globals", r.Globals)
	list(&b, "ambiguous", r.Ambiguous)
	return b.String()
}

// list appends "; name: a, b, c" with at most a few items.
func list(b *strings.Builder, name string, items []string) {
	const most = 5
	if len(items) == 0 {
		return
	}
	shown := items[:min(len(items), most)]
	fmt.Fprintf(b, "; %s: %s", name, strings.Join(shown, ", "))
	if len(items) > most {
		fmt.Fprintf(b, " and %d more", len(items)-most)
	}
}

// Version is the version of a module source: the first 12 hex digits of its
// SHA-256.
func Version(src []byte) string {
	sum := sha256.Sum256(src)
	return hex.EncodeToString(sum[:6])
}
