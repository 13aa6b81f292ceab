package supervisor

import (
	"bufio"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func handoverMode(c *Config) {
	c.Handover = true
	c.SnapshotPath = filepath.Join(c.RuntimeDir, "snapshot")
}

// player is a client connection that must survive every handover.
type player struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func join(t *testing.T, addr string) *player {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &player{t: t, conn: c, r: bufio.NewReader(c)}
}

// inc sends INC and returns the counter and the PID that answered.
func (p *player) inc() (n, pid int) {
	p.t.Helper()
	p.conn.SetDeadline(time.Now().Add(waitBound))
	if _, err := p.conn.Write([]byte("INC\n")); err != nil {
		p.t.Fatalf("write: %v", err)
	}
	line, err := p.r.ReadString('\n')
	if err != nil {
		p.t.Fatalf("read: %v (the connection did not survive)", err)
	}
	if _, err := fmt.Sscanf(line, "%d %d", &n, &pid); err != nil {
		p.t.Fatalf("reply %q: %v", line, err)
	}
	return n, pid
}

func TestHandoverMovesStateAndConnections(t *testing.T) {
	h := startSupervisor(t, "counter", handoverMode)
	at := 0
	h.waitLog(&at, "generation ready", genIs(1))
	a, b := join(t, h.addr), join(t, h.addr)
	a.inc()
	_, oldPID := b.inc()
	want := 3
	for gen := 2; gen <= 4; gen++ {
		r := h.upgrade()
		if r.Err != nil {
			t.Fatalf("handover %d: %v", gen, r.Err)
		}
		e := h.waitLog(&at, "upgrade succeeded", genIs(gen))
		if _, ok := e["blackout_ms"]; !ok {
			t.Errorf("upgrade log %v has no blackout_ms", e)
		}
		if old, _ := e["old_pids"].([]any); len(old) != 1 || int(old[0].(float64)) != oldPID {
			t.Errorf("upgrade log old_pids %v, want [%d]", e["old_pids"], oldPID)
		}
		for _, p := range []*player{a, b} {
			n, pid := p.inc()
			if n != want || pid == oldPID {
				t.Fatalf("after handover %d: counter %d from pid %d, want %d from a new pid (old %d)", gen, n, pid, want, oldPID)
			}
			want++
		}
		_, oldPID = a.inc()
		want++
	}
}

func TestHandoverRollsBackWhenNewWorkerCannotRestore(t *testing.T) {
	h := startSupervisor(t, "counter,fail-gen=2", handoverMode)
	at := 0
	h.waitLog(&at, "generation ready", genIs(1))
	p := join(t, h.addr)
	p.inc()
	p.inc()
	r := h.upgrade()
	if r.Err == nil || !strings.Contains(r.Err.Error(), "rolled back") {
		t.Fatalf("upgrade to a build that cannot restore: %+v, want a rollback", r)
	}
	h.waitLog(&at, "generation ready", genIs(3))
	if n, _ := p.inc(); n != 3 {
		t.Fatalf("after the rollback the counter is %d, want 3", n)
	}
}
