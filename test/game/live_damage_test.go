package game

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestLiveDamagedRegion: a region in the supervisor's fd store that is not
// intact (its magic overwritten; a byte of its header flipped, which its
// checksum catches) is refused by the restarted worker with a clear error,
// and the game starts from the snapshot file instead: the players lose what
// they did since the last autosave, never the rest. The connections are
// hung up, since their sessions were in the region.
func TestLiveDamagedRegion(t *testing.T) {
	for _, tc := range []struct {
		name   string
		at     int64
		damage []byte
		says   string
	}{
		{"magic", 0, []byte("NOTOURS!"), "not a region"},
		{"header", 12, []byte{0xff}, "damaged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startSupervised(t, supervisedOpts{bin: bins.fixed,
				workerArgs: []string{"--live", "--live-players", "1000", "--autosave", "100ms"}})
			_, pid := s.ready(t)
			c := dial(t, s.addr)
			c.expect(t, "LOGIN alice", "OK player=alice coin=100 version="+fixedVersion)
			for _, want := range []string{"OK coin=105", "OK coin=110"} {
				c.expect(t, "WORK", want)
			}
			s.waitRe(&s.at, regexp.MustCompile(`gameserver\[`+strconv.Itoa(pid)+`\]: autosave: saved 1 players`))

			region := storedRegion(t, s.pid)
			f, err := os.OpenFile(region, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(tc.damage, tc.at); err != nil {
				t.Fatal(err)
			}
			f.Close()
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			m := s.waitRe(&s.at, regexp.MustCompile(`gameserver\[(\d+)\]: live: the stored region: (.*); starting from the snapshot file instead`))
			if !strings.Contains(m[2], tc.says) {
				t.Errorf("the refusal says %q, want it to say %q", m[2], tc.says)
			}
			newPID, _ := strconv.Atoi(m[1])
			s.waitRe(&s.at, servingRe(newPID))
			if reply, err := c.do("STATUS"); err == nil {
				t.Fatalf("a connection whose session was in the damaged region answered %q", reply)
			}
			c2 := dial(t, s.addr)
			c2.expect(t, "LOGIN alice", "OK player=alice coin=110 version="+fixedVersion)
			c2.expect(t, "WORK", "OK coin=115") // and a crash from now on is a pause again
			if err := syscall.Kill(newPID, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			c2.expect(t, "WORK", "OK coin=120")
		})
	}
}

// storedRegion is the /proc path of the game's region in the supervisor's
// fd store: a memfd named after its layout.
func storedRegion(t *testing.T, supervisor int) string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", supervisor)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		if strings.HasPrefix(target, "/memfd:gameserver") {
			return filepath.Join(dir, e.Name())
		}
	}
	t.Fatalf("no memfd:gameserver among the supervisor's fds")
	return ""
}
