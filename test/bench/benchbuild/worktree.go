package benchbuild

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// worktreePrefix starts the name of the temporary directory of each
// worktree, followed by the PID of the benchmark that made it; the checkout
// itself is its subdirectory "src".
const worktreePrefix = "benchbuild-"

// worktree is a detached checkout of one commit in a temporary directory.
type worktree struct {
	root string // the main checkout, whose repository it belongs to
	dir  string // the checkout
}

// addWorktree checks commit out in a new temporary directory. It first
// removes the worktrees that earlier benchmarks, since killed, left behind.
func addWorktree(root, commit string) (*worktree, error) {
	removeStale(root)
	parent, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", worktreePrefix, os.Getpid()))
	if err != nil {
		return nil, err
	}
	wt := &worktree{root: root, dir: filepath.Join(parent, "src")}
	if _, err := git(root, "worktree", "add", "--detach", "--quiet", wt.dir, commit); err != nil {
		return nil, errors.Join(err, wt.remove())
	}
	return wt, nil
}

// remove removes the checkout, its directory and git's record of it.
func (wt *worktree) remove() error {
	var errs []error
	if _, err := os.Stat(wt.dir); err == nil {
		if _, err := git(wt.root, "worktree", "remove", "--force", wt.dir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(filepath.Dir(wt.dir)); err != nil {
		errs = append(errs, err)
	}
	if _, err := git(wt.root, "worktree", "prune"); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removeStale removes the worktrees of ours whose benchmark has died, such
// as one killed with SIGKILL in the middle of a build. Errors are ignored:
// this is tidying up.
func removeStale(root string) {
	out, err := git(root, "worktree", "list", "--porcelain")
	if err != nil {
		return
	}
	for _, line := range strings.Split(out, "\n") {
		dir, ok := strings.CutPrefix(line, "worktree ")
		if !ok || filepath.Base(dir) != "src" {
			continue
		}
		parent := filepath.Dir(dir)
		if filepath.Dir(parent) != filepath.Clean(os.TempDir()) || !strings.HasPrefix(filepath.Base(parent), worktreePrefix) {
			continue
		}
		pidText, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(parent), worktreePrefix), "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || alive(pid) {
			continue
		}
		(&worktree{root: root, dir: dir}).remove()
	}
	git(root, "worktree", "prune")
}

// alive says whether process pid exists (signal 0 tests for it).
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
