// Package benchbuild puts in place the binaries a benchmark runs: copied
// from prebuilt ones, or built from the working tree of the module, or from
// a git revision of it checked out in a temporary worktree, so that a
// benchmark can measure two builds side by side in one run (--baseline REV).
//
// Both kinds of build run the same go build, with the same flags and the
// same environment: where gcc is installed, that means with cgo, as a plain
// go build does.
package benchbuild

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/procswitch/supervisor/test/procwatch"
)

// ModulePath is the module whose programs are built.
const ModulePath = "github.com/procswitch/supervisor"

// gitTimeout bounds each git command.
const gitTimeout = 2 * time.Minute

// Binary is one program a benchmark runs.
type Binary struct {
	// Build says how to build it: Out is where it goes, Pkg is relative to
	// the root of the tree it is built from.
	Build procwatch.Build
	// Prebuilt, when not "", is copied to Build.Out instead.
	Prebuilt string
}

// Source says what a set of binaries came from.
type Source struct {
	Rev      string `json:"rev,omitempty"`      // as given, such as HEAD~3; "" for the working tree
	Commit   string `json:"commit,omitempty"`   // Rev's commit; for the working tree, HEAD's
	Subject  string `json:"subject,omitempty"`  // the commit's first line
	Dirty    bool   `json:"dirty,omitempty"`    // the working tree had changes to tracked files
	CGO      string `json:"cgo,omitempty"`      // go env CGO_ENABLED where they were built
	Prebuilt int    `json:"prebuilt,omitempty"` // how many were copied, not built
	Built    int    `json:"built"`
}

// String describes s in one line, such as "HEAD~3 = 1a2b3c4d5e6f (subject)".
func (s Source) String() string {
	var b strings.Builder
	switch {
	case s.Built == 0:
		b.WriteString("prebuilt binaries")
		if s.Rev != "" {
			fmt.Fprintf(&b, " (given as %s)", s.Rev)
		}
		return b.String()
	case s.Rev == "":
		fmt.Fprintf(&b, "working tree at %s", short(s.Commit))
		if s.Dirty {
			b.WriteString(" with uncommitted changes")
		}
	default:
		fmt.Fprintf(&b, "%s = %s", s.Rev, short(s.Commit))
	}
	if s.Subject != "" {
		fmt.Fprintf(&b, " (%s)", clip(s.Subject, 60))
	}
	fmt.Fprintf(&b, ", CGO_ENABLED=%s", s.CGO)
	if s.Prebuilt > 0 {
		fmt.Fprintf(&b, "; %d of %d binaries prebuilt", s.Prebuilt, s.Prebuilt+s.Built)
	}
	return b.String()
}

// Install puts bins in place: it copies the prebuilt ones and builds the
// others in parallel, each bounded by timeout. It builds from the working
// tree of the module around the current directory when rev is "", else
// from git revision rev of its repository, checked out in a temporary
// worktree that is removed before Install returns, whatever happened. A
// build goes on after ctx is done, but no new one starts.
func Install(ctx context.Context, rev string, timeout time.Duration, bins ...Binary) (src Source, err error) {
	src.Rev = rev
	var builds []procwatch.Build
	for _, b := range bins {
		if b.Prebuilt == "" {
			builds = append(builds, b.Build)
			continue
		}
		if err := procwatch.Install(b.Build.Out, b.Prebuilt); err != nil {
			return src, err
		}
		src.Prebuilt++
	}
	if len(builds) == 0 {
		return src, nil
	}
	root, err := procwatch.ModuleRoot(ModulePath)
	if err != nil {
		return src, err
	}
	if err := src.describe(root); err != nil {
		return src, err
	}
	if err := ctx.Err(); err != nil {
		return src, err
	}
	if rev == "" {
		src.CGO = cgoEnabled(root)
		src.Built = len(builds)
		return src, procwatch.GoBuild(root, timeout, builds...)
	}
	wt, err := addWorktree(root, src.Commit)
	if err != nil {
		return src, err
	}
	defer func() {
		if rmErr := wt.remove(); rmErr != nil {
			err = errors.Join(err, rmErr)
		}
	}()
	if err := ctx.Err(); err != nil {
		return src, err
	}
	src.CGO = cgoEnabled(wt.dir)
	src.Built = len(builds)
	if err := procwatch.GoBuild(wt.dir, timeout, builds...); err != nil {
		return src, fmt.Errorf("building %s (%s): %w", rev, short(src.Commit), err)
	}
	return src, nil
}

// describe fills in the commit, its subject, and whether the working tree
// has changes.
func (s *Source) describe(root string) error {
	rev := s.Rev
	if rev == "" {
		rev = "HEAD"
	}
	out, err := git(root, "rev-parse", "--verify", "--end-of-options", rev+"^{commit}")
	if err != nil {
		return fmt.Errorf("revision %q: %w", rev, err)
	}
	s.Commit = out
	s.Subject, _ = git(root, "log", "-1", "--format=%s", s.Commit)
	if s.Rev == "" {
		st, err := git(root, "status", "--porcelain", "--untracked-files=no")
		s.Dirty = err == nil && st != ""
	}
	return nil
}

// cgoEnabled is go env CGO_ENABLED in dir, "?" when it cannot be read.
func cgoEnabled(dir string) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, procwatch.GoTool(), "env", "CGO_ENABLED")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}

// git runs git in dir and returns its output, trimmed.
func git(dir string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), gitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
	cmd.WaitDelay = 5 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

func short(commit string) string { return commit[:min(12, len(commit))] }

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// Build is one of the builds a benchmark measures: its binaries (of a type
// of the benchmark's) and where they came from.
type Build[B any] struct {
	Tag  string // "" when it is the only one, else "new" or "baseline"
	Bins B
	Src  Source
}

// Label prefixes s with the build's tag, when there are two builds.
func (b *Build[B]) Label(s string) string {
	if b.Tag == "" {
		return s
	}
	return b.Tag + " " + s
}
