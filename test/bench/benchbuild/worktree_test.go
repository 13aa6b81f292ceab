package benchbuild

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// newRepo makes a git repository with one commit and returns its root and
// the commit.
func newRepo(t *testing.T) (string, string) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "f"), []byte("one\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"init", "--quiet"},
		{"add", "f"},
		{"-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "one"},
	} {
		if _, err := git(root, args...); err != nil {
			t.Fatal(err)
		}
	}
	commit, err := git(root, "rev-parse", "HEAD")
	if err != nil {
		t.Fatal(err)
	}
	return root, commit
}

func worktrees(t *testing.T, root string) int {
	t.Helper()
	out, err := git(root, "worktree", "list", "--porcelain")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(out, "worktree ")
}

func TestWorktreeAddRemove(t *testing.T) {
	root, commit := newRepo(t)
	wt, err := addWorktree(root, commit)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(wt.dir, "f")); err != nil || string(b) != "one\n" {
		t.Fatalf("the checkout's f: %q, %v", b, err)
	}
	if n := worktrees(t, root); n != 2 {
		t.Fatalf("%d worktrees listed, want 2", n)
	}
	if err := wt.remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(wt.dir)); !os.IsNotExist(err) {
		t.Errorf("the worktree's directory is still there: %v", err)
	}
	if n := worktrees(t, root); n != 1 {
		t.Errorf("%d worktrees listed after remove, want 1", n)
	}
}

// A worktree left by a benchmark that was killed is removed by the next
// one; that of a live benchmark is left alone.
func TestRemoveStale(t *testing.T) {
	root, commit := newRepo(t)
	live, err := addWorktree(root, commit) // ours: this process lives
	if err != nil {
		t.Fatal(err)
	}
	defer live.remove()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Skip(err)
	}
	parent, err := os.MkdirTemp("", worktreePrefix+strconv.Itoa(dead.Process.Pid)+"-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(parent)
	if _, err := git(root, "worktree", "add", "--detach", "--quiet", filepath.Join(parent, "src"), commit); err != nil {
		t.Fatal(err)
	}
	removeStale(root)
	if _, err := os.Stat(parent); !os.IsNotExist(err) {
		t.Errorf("the dead benchmark's worktree is still there: %v", err)
	}
	if _, err := os.Stat(live.dir); err != nil {
		t.Errorf("the live benchmark's worktree is gone: %v", err)
	}
	if n := worktrees(t, root); n != 2 {
		t.Errorf("%d worktrees listed, want 2 (the main one and the live one)", n)
	}
}
