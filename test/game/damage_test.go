package game

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// alone is the game run on its own (not supervised), on --snapshot.
type alone struct {
	*proc
	addr string
	at   int
}

func startAlone(t *testing.T, bin, snapshot string) *alone {
	t.Helper()
	needBinaries(t)
	g := &alone{proc: startProc(t, "gameserver", bin, nil, "--listen", "127.0.0.1:0", "--snapshot", snapshot, "--autosave", "0")}
	g.addr = g.waitRe(&g.at, servingRe(g.pid))[1]
	return g
}

// stop ends the game with SIGTERM: it saves a shutdown snapshot.
func (g *alone) stop(t *testing.T) {
	t.Helper()
	g.signal(syscall.SIGTERM)
	if code := g.wait(); code != 0 {
		t.Fatalf("gameserver exited with %d after SIGTERM", code)
	}
	g.waitRe(&g.at, regexp.MustCompile(`stopped: saved \d+ players`))
}

// twoSnapshots makes a snapshot and its previous one, by two runs of the
// game: in the previous one alice has 110 coins and nothing in her bag; in
// the newest one she has 113 and a gourd.
func twoSnapshots(t *testing.T) (newest, previous []byte) {
	t.Helper()
	snap := filepath.Join(t.TempDir(), "snap")
	g := startAlone(t, bins.fixed, snap)
	c := dial(t, g.addr)
	c.expect(t, "LOGIN alice", "OK player=alice coin=100 version="+fixedVersion)
	c.expect(t, "WORK", "OK coin=105")
	c.expect(t, "WORK", "OK coin=110")
	g.stop(t)

	g = startAlone(t, bins.fixed, snap)
	c = dial(t, g.addr)
	c.expect(t, "LOGIN alice", "OK player=alice coin=110 version="+fixedVersion)
	c.expect(t, "WORK", "OK coin=115")
	c.expect(t, "BUY 1002", "OK coin=113 item=1002 count=1 remain=999999")
	g.stop(t)

	newest, err := os.ReadFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	previous, err = os.ReadFile(snap + ".prev")
	if err != nil {
		t.Fatalf("the second run's shutdown kept no previous snapshot: %v", err)
	}
	return newest, previous
}

// damage is a way to break a snapshot file.
type damage struct {
	name string
	kind string // the error it must be refused with: "truncated" or "corrupt"
	do   func([]byte) []byte
}

func flip(at func(n int) int) func([]byte) []byte {
	return func(b []byte) []byte {
		b = bytes.Clone(b)
		b[at(len(b))] ^= 0x10
		return b
	}
}

var damages = []damage{
	{"truncated to half", "truncated", func(b []byte) []byte { return b[:len(b)/2] }},
	{"truncated by one byte", "truncated", func(b []byte) []byte { return b[:len(b)-1] }},
	{"truncated inside the header", "truncated", func(b []byte) []byte { return b[:12] }},
	{"empty", "truncated", func(b []byte) []byte { return nil }},
	{"byte flipped in the magic", "corrupt", flip(func(int) int { return 1 })},
	{"byte flipped in the header", "corrupt", flip(func(int) int { return 20 })},
	{"byte flipped in a record", "corrupt", flip(func(n int) int { return n / 2 })},
	{"byte flipped in the trailer", "corrupt", flip(func(n int) int { return n - 2 })},
}

// TestDamagedSnapshot: a truncated snapshot and one with a flipped byte are
// refused with an error that says which file, what is wrong and what to do,
// and never loaded: with a previous snapshot the game starts from that one
// (and says so), without one it does not start at all, and the damaged file
// is left as it was for a person to look at.
func TestDamagedSnapshot(t *testing.T) {
	needBinaries(t)
	newest, previous := twoSnapshots(t)
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			damaged := d.do(newest)
			dir := t.TempDir()
			snap := filepath.Join(dir, "snap")
			if err := os.WriteFile(snap, damaged, 0o600); err != nil {
				t.Fatal(err)
			}

			// No previous snapshot: the game refuses to start.
			g := startProc(t, "gameserver", bins.fixed, nil, "--listen", "127.0.0.1:0", "--snapshot", snap)
			if code := g.wait(); code != 1 {
				t.Fatalf("gameserver on a damaged snapshot alone exited with %d, want 1", code)
			}
			g.Log.WaitEOF(waitBound)
			at := 0
			refusal := g.waitFor(&at, "the refusal", func(l line) bool { return strings.Contains(l.Raw, "restore:") })
			if !strings.Contains(refusal.Raw, "snapshot "+d.kind) || !strings.Contains(refusal.Raw, snap) {
				t.Errorf("refusal %q: want it to name %s and say the snapshot is %s", refusal.Raw, snap, d.kind)
			}
			if _, served := g.find(new(int), 0, func(l line) bool { return strings.Contains(l.Raw, "serving on") }); served {
				t.Errorf("gameserver served on a damaged snapshot")
			}
			if b, _ := os.ReadFile(snap); !bytes.Equal(b, damaged) {
				t.Errorf("the damaged snapshot was changed")
			}
			t.Logf("alone: %s", refusal.Raw)

			// With the previous snapshot: that one is restored, and the log
			// says why.
			if err := os.WriteFile(snap+".prev", previous, 0o600); err != nil {
				t.Fatal(err)
			}
			a := startAlone(t, bins.fixed, snap)
			m := a.waitRe(new(int), regexp.MustCompile(`the newest snapshot was refused \((.*)\); the previous one, (\S+), was used instead`))
			if !strings.Contains(m[1], "snapshot "+d.kind) || m[2] != snap+".prev" {
				t.Errorf("fallback line %q: want %s refused as %s and %s.prev used", m[0], snap, d.kind, snap)
			}
			c := dial(t, a.addr)
			c.expect(t, "LOGIN alice", "OK player=alice coin=110 version="+fixedVersion)
			c.expect(t, "STATUS", fmt.Sprintf("OK player=alice coin=110 bag= version=%s pid=%d", fixedVersion, a.pid))
			c.expect(t, "STOCK 1002", "OK item=1002 remain=1000000")
			a.stop(t)
		})
	}
}

// TestDamagedSnapshotSupervised: the same under the supervisor: its first
// worker restores the previous snapshot when the newest has a flipped byte,
// and refuses to start (the supervisor restarting it, with back-off) when
// there is no previous one.
func TestDamagedSnapshotSupervised(t *testing.T) {
	needBinaries(t)
	newest, previous := twoSnapshots(t)
	damaged := flip(func(n int) int { return n / 2 })(newest)
	fallback := regexp.MustCompile(`gameserver\[(\d+)\]: the newest snapshot was refused \((.*)\); the previous one, (\S+), was used instead`)

	s := startSupervised(t, supervisedOpts{bin: bins.fixed, before: func(snap string) {
		writeFile(t, snap, damaged)
		writeFile(t, snap+".prev", previous)
	}})
	_, pid := s.ready(t)
	at := 0
	if m := s.waitRe(&at, fallback); m[1] != fmt.Sprint(pid) || !strings.Contains(m[2], "snapshot corrupt") {
		t.Errorf("fallback line %q: want worker %d to refuse the newest as corrupt", m[0], pid)
	}
	c := dial(t, s.addr)
	c.expect(t, "LOGIN alice", "OK player=alice coin=110 version="+fixedVersion)
	c.expect(t, "STATUS", fmt.Sprintf("OK player=alice coin=110 bag= version=%s pid=%d", fixedVersion, pid))

	s = startSupervised(t, supervisedOpts{bin: bins.fixed, before: func(snap string) { writeFile(t, snap, damaged) }})
	for range 2 {
		m := s.waitRe(&s.at, regexp.MustCompile(`gameserver\[(\d+)\]: restore: (.*)`))
		if !strings.Contains(m[2], "snapshot corrupt") || !strings.Contains(m[2], s.snapshot) {
			t.Errorf("refusal %q: want it to name %s and say it is corrupt", m[0], s.snapshot)
		}
		s.waitMsg(&s.at, "worker exited", func(l line) bool { return l.Str("status") == "exit status 1" })
		s.waitMsg(&s.at, "worker restarting", nil)
	}
	if b, _ := os.ReadFile(s.snapshot); !bytes.Equal(b, damaged) {
		t.Errorf("the damaged snapshot was changed")
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
