package game

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSaveFailedKeepsPlayers: the snapshot lives on a 64 KiB tmpfs, which
// the test fills while 100 bots play. An upgrade then cannot save: the old
// worker says HANDOVER=failed and serves on, the upgrade fails with kind
// save-failed, no bot is disconnected, no coin or purchase is lost or
// repeated, and the bots play on, on the old worker. Once the space is
// free again, the next upgrade succeeds and keeps everyone.
func TestSaveFailedKeepsPlayers(t *testing.T) {
	const nbots = 100
	dir := mountTinyTmpfs(t)
	snap := filepath.Join(dir, "snap")
	s := startSupervised(t, supervisedOpts{
		bin:        bins.buggy,
		flags:      []string{"--snapshot", snap, "--ready-timeout", "30s", "--drain-timeout", "30s"},
		workerArgs: []string{"--autosave", "100ms", "--stock", fmt.Sprint(bigStock)},
	})
	_, pid := s.ready(t)
	ledger, era, probe, bots, tm := startPlaying(t, s.addr, nbots)
	at := s.at
	s.waitRe(&at, regexp.MustCompile(`gameserver\[`+strconv.Itoa(pid)+`\]: autosave: saved \d+ players`))
	if _, err := os.Stat(snap); err != nil {
		t.Fatalf("after the first autosave: %v", err)
	}

	filler := fillUp(t, s, &at, filepath.Join(dir, "filler"))
	buggy := build{known: true, version: buggyVersion}
	s.install(t, bins.fixed)
	era.set(build{})
	o := s.hup(t)
	if o.ok {
		t.Fatal("the upgrade succeeded on a full snapshot directory")
	}
	if kind := o.end.Str("kind"); kind != "save-failed" {
		t.Fatalf("upgrade failed with kind %q (%s), want save-failed", kind, o.end.Str("reason"))
	}
	at = o.started
	serving := s.waitRe(&at, regexp.MustCompile(`gameserver\[(\d+)\]: handover: .*no space left on device.*; serving on: (\d+) sessions resumed`))
	if serving[1] != strconv.Itoa(pid) || serving[2] != strconv.Itoa(nbots+1) {
		t.Errorf("serving on: %q; want pid %d with %d sessions", serving[0], pid, nbots+1)
	}
	era.set(buggy)
	probe.c.expect(t, "STATUS", probe.status(buggyVersion, pid)) // the same worker, the same connection
	probe.checkRule(t, false)
	tm.waitPast(t, tm.marks(), 3)
	t.Logf("save failed: %s", o.end.Str("reason"))

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	at = s.at
	s.waitRe(&at, regexp.MustCompile(`gameserver\[`+strconv.Itoa(pid)+`\]: autosave: saved \d+ players`))
	era.set(build{})
	fixed := build{known: true, fixed: true, version: fixedVersion}
	pid = s.succeeded(t, s.hup(t), pid, nbots+1)
	era.set(fixed)
	probe.c.expect(t, "STATUS", probe.status(fixedVersion, pid))
	probe.checkRule(t, true)
	tm.waitPast(t, tm.marks(), 3)

	if err := tm.halt(); err != nil {
		t.Fatal(err)
	}
	for _, b := range append(bots, probe) {
		b.c.expect(t, "STATUS", b.status(fixedVersion, pid))
	}
	ledger.check(t, probe.c)
	s.signal(syscall.SIGTERM)
	if code := s.wait(); code != 0 {
		t.Errorf("supervisor exited with %d after SIGTERM", code)
	}
}

// mountTinyTmpfs mounts a 64 KiB tmpfs on a new directory, unmounted at
// the test's end; it skips the test where that is not allowed.
func mountTinyTmpfs(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts a 64 KiB tmpfs as the snapshot directory, to fill it")
	}
	dir := filepath.Join(t.TempDir(), "tiny")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=64k,mode=0700"); err != nil {
		t.Skipf("cannot mount a tmpfs on %s (%v): no way to fill a snapshot directory", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	return dir
}

// fillUp writes a file at path until the file system is full, and keeps it
// full: an autosave in progress holds blocks that it frees when it fails,
// so after each failed autosave the file takes what was freed, until one
// frees nothing. It returns path.
func fillUp(t *testing.T, s *supervised, at *int, path string) string {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 512)
	fill := func() (written int) {
		for range 1 << 12 { // 2 MiB at most: far more than the file system
			n, err := f.Write(chunk)
			written += n
			if errors.Is(err, syscall.ENOSPC) {
				return written
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		t.Fatalf("wrote %d bytes to %s without filling it", written, path)
		return 0
	}
	total := fill()
	failed := regexp.MustCompile(`autosave to \S+: .*no space left on device`)
	for range 20 {
		s.waitRe(at, failed)
		n := fill()
		total += n
		if n == 0 {
			t.Logf("filled the snapshot directory: %d bytes of filler", total)
			return path
		}
	}
	t.Fatalf("after 20 failed autosaves, the file system still had room (%d bytes of filler)", total)
	return ""
}

// TestSelfUpgradeSaveFailedKeepsPlayers: SIGUSR2 on a full snapshot
// directory: the worker cannot save for the new supervisor, says so and
// serves on; the self-upgrade fails with kind save-failed, this supervisor
// goes on, and so do the 50 bots, connected, on the same worker. With room
// again, an upgrade hands over to the next worker and keeps everyone.
func TestSelfUpgradeSaveFailedKeepsPlayers(t *testing.T) {
	const nbots = 50
	dir := mountTinyTmpfs(t)
	snap := filepath.Join(dir, "snap")
	s := startSupervised(t, supervisedOpts{
		bin:        bins.buggy,
		flags:      []string{"--snapshot", snap, "--ready-timeout", "30s", "--drain-timeout", "30s"},
		workerArgs: []string{"--autosave", "100ms", "--stock", fmt.Sprint(bigStock)},
	})
	_, pid := s.ready(t)
	ledger, era, probe, bots, tm := startPlaying(t, s.addr, nbots)
	at := s.at
	s.waitRe(&at, regexp.MustCompile(`gameserver\[`+strconv.Itoa(pid)+`\]: autosave: saved \d+ players`))
	filler := fillUp(t, s, &at, filepath.Join(dir, "filler"))

	at = s.at
	s.signal(syscall.SIGUSR2)
	failed := s.find2(t, "self-upgrade failed: this supervisor goes on serving", nil)
	if kind := failed.Str("kind"); kind != "save-failed" {
		t.Fatalf("self-upgrade failed with kind %q (%s), want save-failed", kind, failed.Str("reason"))
	}
	// The worker's line and the supervisor's come in either order.
	s.waitRe(&at, regexp.MustCompile(`gameserver\[`+strconv.Itoa(pid)+`\]: handover: .*; serving on: `+strconv.Itoa(nbots+1)+` sessions resumed`))
	probe.c.expect(t, "STATUS", probe.status(buggyVersion, pid))
	tm.waitPast(t, tm.marks(), 3)
	if s.Exited() {
		t.Fatalf("the supervisor exited after its self-upgrade failed: %v", s.Err())
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	s.install(t, bins.fixed)
	era.set(build{})
	fixed := build{known: true, fixed: true, version: fixedVersion}
	pid = s.succeeded(t, s.hup(t), pid, nbots+1)
	era.set(fixed)
	probe.c.expect(t, "STATUS", probe.status(fixedVersion, pid))
	tm.waitPast(t, tm.marks(), 3)
	if err := tm.halt(); err != nil {
		t.Fatal(err)
	}
	for _, b := range append(bots, probe) {
		b.c.expect(t, "STATUS", b.status(fixedVersion, pid))
	}
	ledger.check(t, probe.c)
	s.signal(syscall.SIGTERM)
	if code := s.wait(); code != 0 {
		t.Errorf("supervisor exited with %d after SIGTERM", code)
	}
}

// TestStopSaveFailed: a stop on a full snapshot directory. The worker cannot
// save its shutdown snapshot, says HANDOVER=failed and would serve on until
// the drain timeout (a minute here); the supervisor kills it at once, says
// which snapshot is left, and exits.
func TestStopSaveFailed(t *testing.T) {
	dir := mountTinyTmpfs(t)
	snap := filepath.Join(dir, "snap")
	s := startSupervised(t, supervisedOpts{
		bin:        bins.buggy,
		flags:      []string{"--snapshot", snap, "--drain-timeout", "1m"},
		workerArgs: []string{"--autosave", "100ms", "--stock", fmt.Sprint(bigStock)},
	})
	_, pid := s.ready(t)
	_, _, _, _, tm := startPlaying(t, s.addr, 10)
	at := s.at
	s.waitRe(&at, regexp.MustCompile(`gameserver\[`+strconv.Itoa(pid)+`\]: autosave: saved \d+ players`))
	fillUp(t, s, &at, filepath.Join(dir, "filler"))
	began := time.Now()
	s.signal(syscall.SIGTERM)
	killed := s.waitMsg(&at, "stopping: the worker could not save its state; killing it", nil)
	if killed.Int("pid") != pid || killed.Str("snapshot") == "" {
		t.Errorf("killing line %s: want pid %d and the snapshot left", killed.Raw, pid)
	}
	s.wait()
	if d := time.Since(began); d > waitBound {
		t.Errorf("the supervisor took %v to stop; the drain timeout is 1m", d)
	}
	tm.halt() // the bots lose their connections: the stop ends the game
}
