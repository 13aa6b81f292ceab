package handoff

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/internal/contract"
	"golang.org/x/sys/unix"
)

// pending reports whether a datagram waits on the fake supervisor's
// socket, without waiting for one.
func (r *storeReader) pending() bool {
	rc, err := r.rx.SyscallConn()
	if err != nil {
		r.t.Fatal(err)
	}
	var n int
	rc.Control(func(fd uintptr) {
		n, _, _ = unix.Recvfrom(int(fd), make([]byte, 1), unix.MSG_PEEK|unix.MSG_DONTWAIT)
	})
	return n > 0
}

// readBarrier reads a BARRIER=1 datagram and closes its fd, as the
// supervisor does once it got there.
func (r *storeReader) readBarrier() {
	r.t.Helper()
	m := r.read()
	if m.text != "BARRIER=1" || len(m.fds) != 1 {
		r.t.Fatalf("got %q with %d fds, want BARRIER=1 with one", m.text, len(m.fds))
	}
	unix.Close(m.fds[0])
}

// stateRecord records a State's calls of its hooks.
type stateRecord struct {
	mu    sync.Mutex
	calls []string // "restore", "resume N", "save KIND"
}

func (rec *stateRecord) add(s string) {
	rec.mu.Lock()
	rec.calls = append(rec.calls, s)
	rec.mu.Unlock()
}

func (rec *stateRecord) String() string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return strings.Join(rec.calls, ", ")
}

// TestStateHandOver: in handover mode HandOver saves, then stores the
// connections, then says HANDOVER=saved and waits for the barrier; a
// failed save stores nothing and says HANDOVER=failed.
func TestStateHandOver(t *testing.T) {
	t.Setenv(contract.EnvMode, contract.ModeHandover)
	r := newStoreReader(t)
	w := storeWorker(t, r.path)
	conns, _ := socketPairs(t, 300)
	store := make([]Conn, len(conns))
	for i, c := range conns {
		store[i] = Conn{Name: "c" + string(rune('a'+i%26)), Conn: c}
	}
	var rec stateRecord
	saveErr := error(nil)
	st := &State{Worker: w, Path: "/snapshot",
		Restore: func(string) error { return nil },
		Save: func(_ context.Context, path string, kind SaveKind) error {
			if r.pending() {
				t.Errorf("a datagram was sent before Save(%v)", kind)
			}
			rec.add("save " + kind.String() + " " + path)
			return saveErr
		},
	}
	done := make(chan error, 1)
	go func() { done <- st.HandOver(store) }()
	if m := r.read(); len(m.fds) != maxStoreFDs || !strings.HasPrefix(m.text, "FDSTORE=1\nFDNAME=ca:cb:") {
		t.Fatalf("first datagram %.40q with %d fds, want FDSTORE=1 with %d", m.text, len(m.fds), maxStoreFDs)
	}
	if m := r.read(); len(m.fds) != 300-maxStoreFDs {
		t.Fatalf("second datagram with %d fds, want %d", len(m.fds), 300-maxStoreFDs)
	}
	if m := r.read(); m.text != contract.MsgHandoverSaved {
		t.Fatalf("got %q, want %s", m.text, contract.MsgHandoverSaved)
	}
	r.readBarrier()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, want := rec.String(), "save handover /snapshot"; got != want {
		t.Errorf("calls: %s; want %s", got, want)
	}

	// A save that fails: nothing is stored; HANDOVER=failed says why.
	saveErr = errors.New("write /snapshot.tmp: no space left on device")
	st2 := &State{Worker: w, Path: "/snapshot", Restore: st.Restore, Save: st.Save}
	if err := st2.HandOver(store); !errors.Is(err, ErrSaveFailed) || !errors.Is(err, saveErr) {
		t.Fatalf("HandOver with a failing save: %v, want it to wrap ErrSaveFailed and %v", err, saveErr)
	}
	want := contract.MsgHandoverFailed + "\n" + contract.MsgHandoverErrorKey + saveErr.Error()
	if m := r.read(); m.text != want || len(m.fds) != 0 {
		t.Fatalf("after a failed save: %q with %d fds, want %q and none", m.text, len(m.fds), want)
	}
	if r.pending() {
		t.Error("more than HANDOVER=failed was sent after a failed save")
	}
}

// TestStateSaveFailedServesOn: after a failed handover save the autosaves
// resume, and a later handover, once saving works again, hands over.
func TestStateSaveFailedServesOn(t *testing.T) {
	t.Setenv(contract.EnvMode, contract.ModeHandover)
	r := newStoreReader(t)
	w := storeWorker(t, r.path)
	var mu sync.Mutex
	full, autosaves := true, 0
	autosaved := make(chan struct{}, 1)
	st := &State{Worker: w, Path: "/snapshot", Autosave: time.Millisecond,
		Restore: func(string) error { return nil },
		Save: func(_ context.Context, _ string, kind SaveKind) error {
			mu.Lock()
			defer mu.Unlock()
			if full {
				return syscall.ENOSPC
			}
			if kind == SaveAutosave {
				autosaves++
				select {
				case autosaved <- struct{}{}:
				default:
				}
			}
			return nil
		},
	}
	if err := st.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := st.Ready(); err != nil {
		t.Fatal(err)
	}
	if m := r.read(); m.text != contract.MsgReady {
		t.Fatalf("got %q, want %s", m.text, contract.MsgReady)
	}
	err := st.HandOver(nil)
	if !errors.Is(err, ErrSaveFailed) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("HandOver on a full disk: %v; want ErrSaveFailed and ENOSPC", err)
	}
	if m := r.read(); !strings.HasPrefix(m.text, contract.MsgHandoverFailed+"\n"+contract.MsgHandoverErrorKey+"no space left") {
		t.Fatalf("got %q, want HANDOVER=failed with the reason", m.text)
	}
	mu.Lock()
	full = false
	mu.Unlock()
	select {
	case <-autosaved:
	case <-time.After(10 * time.Second):
		t.Fatal("no autosave within 10s of the failed handover: the autosaves did not resume")
	}
	done := make(chan error, 1)
	go func() { done <- st.HandOver(nil) }()
	if m := r.read(); m.text != contract.MsgHandoverSaved {
		t.Fatalf("second handover: got %q, want %s", m.text, contract.MsgHandoverSaved)
	}
	r.readBarrier()
	if err := <-done; err != nil {
		t.Fatalf("second handover: %v", err)
	}
}

// TestOneLine: HANDOVER_ERROR's value is one line, bounded, on a
// character's boundary.
func TestOneLine(t *testing.T) {
	for _, tt := range []struct {
		in    string
		limit int
		want  string
	}{
		{"disk full", 20, "disk full"},
		{"a\nb\r\n c\x00d\te", 20, "a b c d e"},
		{"  padded  ", 20, "padded"},
		{"0123456789abcdef", 10, "0123456..."},
		{"ééééé", 8, "éé..."}, // 2 bytes each: cut before the third
		{"bad \xff byte", 20, "bad ? byte"},
	} {
		if got := oneLine(tt.in, tt.limit); got != tt.want || len(got) > tt.limit {
			t.Errorf("oneLine(%q, %d) = %q, want %q", tt.in, tt.limit, got, tt.want)
		}
	}
}

// TestStateShutdown: outside handover mode HandOver saves for a shutdown
// and stores nothing; with no path it saves nothing.
func TestStateShutdown(t *testing.T) {
	os.Unsetenv(contract.EnvMode)
	t.Setenv(contract.EnvSnapshot, "")
	r := newStoreReader(t)
	w := storeWorker(t, r.path)
	var rec stateRecord
	st := &State{Worker: w, Path: "/snapshot",
		Restore: func(string) error { return nil },
		Save: func(_ context.Context, path string, kind SaveKind) error {
			rec.add("save " + kind.String() + " " + path)
			return nil
		},
	}
	conns, _ := socketPairs(t, 2)
	if err := st.HandOver([]Conn{{"a", conns[0]}, {"b", conns[1]}}); err != nil {
		t.Fatal(err)
	}
	if got, want := rec.String(), "save shutdown /snapshot"; got != want {
		t.Errorf("calls: %s; want %s", got, want)
	}
	if r.pending() {
		t.Error("a datagram was sent outside handover mode")
	}
	st.Path = ""
	if err := st.HandOver(nil); err != nil || rec.String() != "save shutdown /snapshot" {
		t.Errorf("HandOver without a path: %v, calls %s; want no save", err, rec.String())
	}
}

// TestStateAutosave: autosaves begin with Ready, not before; HandOver
// abandons the autosave in progress (its context ends) and saves only once
// it has returned.
func TestStateAutosave(t *testing.T) {
	os.Unsetenv(contract.EnvMode)
	w := storeWorker(t, "") // not supervised: Ready does nothing
	var rec stateRecord
	started := make(chan struct{})
	var once sync.Once
	st := &State{Worker: w, Path: "/snapshot", Autosave: time.Millisecond,
		Restore: func(string) error { rec.add("restore"); return nil },
		Save: func(ctx context.Context, path string, kind SaveKind) error {
			if kind != SaveAutosave {
				rec.add("save " + kind.String())
				return nil
			}
			once.Do(func() {
				rec.add("autosave")
				close(started)
				<-ctx.Done() // a long save, abandoned
				rec.add("autosave abandoned")
			})
			return ctx.Err()
		},
	}
	if err := st.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := st.Ready(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("no autosave within 10s of Ready")
	}
	if err := st.HandOver(nil); err != nil {
		t.Fatal(err)
	}
	if got, want := rec.String(), "restore, autosave, autosave abandoned, save shutdown"; got != want {
		t.Errorf("calls: %s; want %s", got, want)
	}
}

// TestStateStart: Restore, then Resume with the connections handed over;
// a failing Restore closes them; the drain signal ends the wait.
func TestStateStart(t *testing.T) {
	clearContractEnv(t)
	os.Unsetenv(contract.EnvMode)
	t.Run("resume", func(t *testing.T) {
		sup := newFakeSupervisor(t)
		_, peers := socketPairs(t, 300)
		go func() {
			if sup.waiting() == nil {
				sup.pass(peers)
			}
		}()
		var rec stateRecord
		var got []Conn
		st := &State{Worker: &Worker{}, Path: "/snapshot",
			Restore: func(path string) error { rec.add("restore " + path); return nil },
			Resume:  func(conns []Conn) { rec.add("resume"); got = conns },
			Save:    func(context.Context, string, SaveKind) error { return nil },
		}
		if err := st.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer closeConns(got)
		if rec.String() != "restore /snapshot, resume" || len(got) != 300 || got[299].Name != "c299" {
			t.Fatalf("calls %s, %d conns; want restore then resume with 300", rec.String(), len(got))
		}
	})
	t.Run("restore fails", func(t *testing.T) {
		sup := newFakeSupervisor(t)
		local, peers := socketPairs(t, 3)
		go func() {
			if sup.waiting() == nil {
				sup.pass(peers)
			}
		}()
		broken := errors.New("schema from the future")
		st := &State{Worker: &Worker{},
			Restore: func(string) error { return broken },
			Resume:  func([]Conn) { t.Error("Resume called after a failed Restore") },
			Save:    func(context.Context, string, SaveKind) error { return nil },
		}
		if err := st.Start(context.Background()); !errors.Is(err, broken) {
			t.Fatalf("Start: %v, want %v", err, broken)
		}
		for _, p := range peers { // the supervisor's copies, as it keeps them
			unix.Close(p)
		}
		for i, c := range local { // the worker's copies are closed too: EOF
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
				t.Errorf("connection %d still open after a failed Restore: %d, %v", i, n, err)
			}
		}
	})
	t.Run("drain signal", func(t *testing.T) {
		sup := newFakeSupervisor(t)
		w, err := newWorker(testFDBase)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		go func() {
			if sup.waiting() == nil {
				syscall.Kill(os.Getpid(), syscall.SIGTERM) // caught: w watches for it
			}
		}()
		st := &State{Worker: w,
			Restore: func(string) error { t.Error("Restore called after the drain signal"); return nil },
			Save:    func(context.Context, string, SaveKind) error { return nil },
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := st.Start(ctx); !errors.Is(err, ErrHandoverAborted) {
			t.Fatalf("Start: %v, want ErrHandoverAborted", err)
		}
	})
}

func TestSaveKindString(t *testing.T) {
	for k, want := range map[SaveKind]string{SaveAutosave: "autosave", SaveHandover: "handover", SaveShutdown: "shutdown", 9: "SaveKind(9)"} {
		if got := k.String(); got != want {
			t.Errorf("SaveKind(%d).String() = %q, want %q", int(k), got, want)
		}
	}
}
