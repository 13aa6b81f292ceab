package handoff

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/procswitch/supervisor/internal/contract"
	"golang.org/x/sys/unix"
)

// fakeSupervisor is the supervisor's end of a handover connection, in the
// test process: the worker's end is named by SUPERVISOR_HANDOVER_FD.
type fakeSupervisor struct {
	t    *testing.T
	conn *net.UnixConn
}

func newFakeSupervisor(t *testing.T) *fakeSupervisor {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "supervisor end")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv(contract.EnvHandoverFD, strconv.Itoa(fds[1])) // AwaitHandover takes it
	return &fakeSupervisor{t: t, conn: c.(*net.UnixConn)}
}

// waiting reads the worker's WAITING, bounded.
func (s *fakeSupervisor) waiting() error {
	buf := make([]byte, 64)
	s.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := s.conn.Read(buf)
	if err != nil || string(buf[:n]) != contract.HandoverWaiting {
		return fmt.Errorf("read %q, %v; want %s", buf[:n], err, contract.HandoverWaiting)
	}
	return nil
}

// pass sends the peers in messages of at most 250, as the supervisor does,
// named c0, c1, ...; then GO.
func (s *fakeSupervisor) pass(fds []int) error {
	for i := 0; i < len(fds); i += 250 {
		batch := fds[i:min(i+250, len(fds))]
		names := make([]string, len(batch))
		for j := range batch {
			names[j] = "c" + strconv.Itoa(i+j)
		}
		msg := contract.HandoverFDsKey + strings.Join(names, ":")
		if _, _, err := s.conn.WriteMsgUnix([]byte(msg), unix.UnixRights(batch...), nil); err != nil {
			return err
		}
	}
	_, err := s.conn.Write([]byte(contract.HandoverGo))
	return err
}

// fdTableSize is this process's fd table size, from /proc/self/status; 0
// when it cannot be read.
func fdTableSize() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "FDSize:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// TestAwaitHandoverManyConns: a thousand connections in four messages
// arrive as connections, in order, under their names, each the very socket
// passed; the fd table was grown before WAITING.
func TestAwaitHandoverManyConns(t *testing.T) {
	sup := newFakeSupervisor(t)
	const n = 1000
	local, peers := socketPairs(t, n) // the worker gets the peers
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	wantTable := int(min(lim.Cur, fdTableRoom))
	tableAtWaiting := make(chan int, 1)
	errs := make(chan error, 1)
	go func() {
		err := sup.waiting()
		tableAtWaiting <- fdTableSize()
		if err == nil {
			err = sup.pass(peers)
		}
		errs <- err
	}()
	w := &Worker{}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conns, err := w.awaitHandover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer closeConns(conns)
	if err := <-errs; err != nil {
		t.Fatalf("supervisor: %v", err)
	}
	if got := <-tableAtWaiting; got < wantTable {
		t.Errorf("fd table of %d entries at WAITING, want %d or more (grown ahead)", got, wantTable)
	}
	if !w.wasHandedOver() {
		t.Error("HandedOver is false after GO")
	}
	if len(conns) != n {
		t.Fatalf("received %d connections, want %d", len(conns), n)
	}
	for i, c := range conns {
		if c.Name != "c"+strconv.Itoa(i) {
			t.Fatalf("connection %d is named %q, want c%d", i, c.Name, i)
		}
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1)
		local[i].SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := local[i].Read(buf); err != nil || buf[0] != byte(i) {
			t.Fatalf("connection %d (%s) is not the socket passed as it: read %v, %v", i, c.Name, buf, err)
		}
	}
}

// TestAwaitHandoverAborted: the supervisor closes the connection before GO
// (the upgrade was called off); AwaitHandover says so and gives back what it
// got, for the caller to close.
func TestAwaitHandoverAborted(t *testing.T) {
	sup := newFakeSupervisor(t)
	_, peers := socketPairs(t, 3)
	go func() {
		if sup.waiting() == nil {
			sup.conn.WriteMsgUnix([]byte(contract.HandoverFDsKey+"a:b:c"), unix.UnixRights(peers...), nil)
		}
		sup.conn.Close()
	}()
	w := &Worker{}
	conns, err := w.awaitHandover(context.Background())
	defer closeConns(conns)
	if !errors.Is(err, ErrHandoverAborted) {
		t.Fatalf("AwaitHandover: %v, want ErrHandoverAborted", err)
	}
	if w.wasHandedOver() {
		t.Error("HandedOver is true without GO")
	}
}

// TestAwaitHandoverContext: the wait ends with the context, and what was
// received is closed.
func TestAwaitHandoverContext(t *testing.T) {
	sup := newFakeSupervisor(t)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		sup.waiting()
		cancel() // the worker is waiting: stop it
	}()
	w := &Worker{}
	conns, err := w.awaitHandover(ctx)
	if !errors.Is(err, context.Canceled) || len(conns) != 0 {
		t.Fatalf("AwaitHandover: %d conns, %v; want none and context.Canceled", len(conns), err)
	}
}

// TestAwaitHandoverColdStart: without a handover connection AwaitHandover
// returns at once, and HandedOver is false.
func TestAwaitHandoverColdStart(t *testing.T) {
	os.Unsetenv(contract.EnvHandoverFD)
	w := &Worker{}
	conns, err := w.awaitHandover(context.Background())
	if err != nil || len(conns) != 0 || w.wasHandedOver() {
		t.Fatalf("AwaitHandover on a cold start: %v, %v, HandedOver %v", conns, err, w.wasHandedOver())
	}
}
