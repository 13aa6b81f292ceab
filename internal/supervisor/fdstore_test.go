package supervisor

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/procswitch/supervisor/internal/proc"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// name sends NAME and returns the name the worker got the connection
// under, and the PID that answered.
func (p *player) name() (string, int) {
	p.t.Helper()
	p.conn.SetDeadline(time.Now().Add(waitBound))
	if _, err := p.conn.Write([]byte("NAME\n")); err != nil {
		p.t.Fatalf("write: %v", err)
	}
	line, err := p.r.ReadString('\n')
	if err != nil {
		p.t.Fatalf("read: %v (the connection did not survive)", err)
	}
	name, pidStr, _ := strings.Cut(strings.TrimSpace(line), " ")
	pid, err := strconv.Atoi(pidStr)
	if err != nil {
		p.t.Fatalf("reply %q: %v", line, err)
	}
	return name, pid
}

// TestHandoverStoresManyAtOnce: the old worker stores 300 connections in
// two FDSTORE=1 datagrams (the kernel passes at most 253 fds in one), with a
// list of names or, as systemd has it, one name for all. The supervisor
// drops those whose client hung up, passes the rest under their names, and
// a rollback passes them again, under the same names, to a cold start.
func TestHandoverStoresManyAtOnce(t *testing.T) {
	for _, store := range []string{"batch", "shared"} {
		t.Run(store, func(t *testing.T) {
			const n = 300
			h := startSupervisor(t, "counter,store="+store, handoverMode)
			at := 0
			h.waitLog(&at, "generation ready", genIs(1))
			players := make([]*player, n)
			want := 1
			for i := range players {
				players[i] = join(t, h.addr)
				if got, _ := players[i].inc(); got != want { // accepted, in this order
					t.Fatalf("player %d: counter %d, want %d", i, got, want)
				}
				want++
			}
			hungUp := map[int]bool{}
			for i := 7; i < n; i += 50 {
				// On loopback the FIN reaches the worker's socket within
				// close(2): the store holds a hung-up connection.
				players[i].conn.Close()
				hungUp[i] = true
			}
			wantName := func(i int) string {
				if store == "shared" {
					return "conn"
				}
				return "conn" + strconv.Itoa(i)
			}
			check := func(gen int) {
				t.Helper()
				pid := 0
				for i, p := range players {
					if hungUp[i] {
						continue
					}
					name, by := p.name()
					if name != wantName(i) {
						t.Fatalf("gen %d: player %d's connection came as %q, want %q", gen, i, name, wantName(i))
					}
					if pid == 0 {
						pid = by
					}
					if got, by := p.inc(); got != want || by != pid {
						t.Fatalf("gen %d: player %d: counter %d from pid %d, want %d from %d", gen, i, got, by, want, pid)
					}
					want++
				}
			}

			if r := h.upgrade(); r.Err != nil {
				t.Fatalf("handover: %v", r.Err)
			}
			e := h.waitLog(&at, "upgrade succeeded", genIs(2))
			if got := int(e["connections"].(float64)); got != n-len(hungUp) {
				t.Errorf("upgrade log: %d connections, want %d", got, n-len(hungUp))
			}
			check(2)
			if got := storedPerMessage(h.logs); len(got) < 2 || got[0] != 253 || got[1] != n-253 {
				t.Errorf("fds per FDSTORE=1 message: %v, want 253 then %d", got, n-253)
			}
			if d := h.logs.count("handover: dropped stored connections whose peer hung up"); d != 1 {
				t.Errorf("%d logs of dropped connections, want 1", d)
			} else if e, _ := h.logs.find(0, "handover: dropped stored connections whose peer hung up", nil); int(e["dropped"].(float64)) != len(hungUp) {
				t.Errorf("dropped %v connections, want %d", e["dropped"], len(hungUp))
			}

			h.setMode(fmt.Sprintf("counter,store=%s,fail-gen=3", store))
			if r := h.upgrade(); r.Err == nil || !strings.Contains(r.Err.Error(), "rolled back") {
				t.Fatalf("upgrade to a build that cannot restore: %+v, want a rollback", r)
			}
			h.waitLog(&at, "generation ready", genIs(4))
			check(4)
		})
	}
}

// storedPerMessage lists the fds of each FDSTORE=1 message, in order.
func storedPerMessage(r *logRecorder) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var fds []int
	for _, e := range r.entries {
		if e["message"] == "fds stored" {
			fds = append(fds, int(e["fds"].(float64)))
		}
	}
	return fds
}

// TestStoreFDNames: FDNAME names every fd of an FDSTORE=1 message, as in
// systemd, or lists one name each; a list of the wrong length is refused as
// systemd refuses a bad name, and the fds are kept under the default name.
func TestStoreFDNames(t *testing.T) {
	tests := []struct {
		fdname string
		fds    int
		want   string // the stored names, joined by ':'
		warns  bool
	}{
		{"conn", 3, "conn:conn:conn", false},
		{"", 2, "stored:stored", false},
		{"a:b:c", 3, "a:b:c", false},
		{"a::c", 3, "a:stored:c", false},
		{"a:b", 3, "stored:stored:stored", true},
		{"a:b:c:d", 3, "stored:stored:stored", true},
	}
	for _, tc := range tests {
		var logs logRecorder
		logs.changed = make(chan struct{}, 1)
		s := &Supervisor{log: zerolog.New(&logs)}
		fds := make([]int, tc.fds)
		for i := range fds {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			fd, err := unix.Dup(int(w.Fd()))
			w.Close()
			if err != nil {
				t.Fatal(err)
			}
			fds[i] = fd
		}
		s.storeFDs(&worker{proc: &proc.Process{Pid: 42}}, tc.fdname, fds)
		var names []string
		for _, st := range s.store {
			names = append(names, st.name)
		}
		if got := strings.Join(names, ":"); got != tc.want {
			t.Errorf("FDNAME=%q with %d fds: stored as %s, want %s", tc.fdname, tc.fds, got, tc.want)
		}
		if warned := logs.count("FDSTORE=1 with a list of FDNAMEs not one per fd: stored under the default name") > 0; warned != tc.warns {
			t.Errorf("FDNAME=%q with %d fds: warned %v, want %v", tc.fdname, tc.fds, warned, tc.warns)
		}
		s.clearStore()
	}
}

// TestDropHungUp: one poll(2) over the store finds the connections whose
// peer hung up (closed, or reset), closes and drops them, and keeps the rest
// in order.
func TestDropHungUp(t *testing.T) {
	var logs logRecorder
	logs.changed = make(chan struct{}, 1)
	s := &Supervisor{log: zerolog.New(&logs)}
	const n = 600
	peers := make([]int, n)
	for i := range n {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		s.store = append(s.store, stored{name: "c" + strconv.Itoa(i), fd: fds[0]})
		peers[i] = fds[1]
	}
	defer func() {
		for _, p := range peers {
			unix.Close(p)
		}
	}()
	hungUp := 0
	for i := 0; i < n; i += 7 {
		unix.Close(peers[i]) // the peer left: the stored end polls POLLRDHUP|POLLHUP
		peers[i] = -1
		hungUp++
	}
	if got := s.dropHungUp(); got != hungUp {
		t.Fatalf("dropHungUp dropped %d, want %d", got, hungUp)
	}
	if len(s.store) != n-hungUp {
		t.Fatalf("%d kept, want %d", len(s.store), n-hungUp)
	}
	j := 0
	for i := range n {
		if i%7 == 0 {
			continue
		}
		if st := s.store[j]; st.name != "c"+strconv.Itoa(i) {
			t.Fatalf("kept %d is %s, want c%d", j, st.name, i)
		}
		j++
	}
	if got := s.dropHungUp(); got != 0 {
		t.Fatalf("a second dropHungUp dropped %d, want 0", got)
	}
	s.clearStore()
}
