package handoff

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/internal/contract"
)

func init() { helpers["state"] = helperState }

// helperState is a stateful worker on State: one counter, which "INC" lines
// on the passed "game" socket increment and answer; restored from
// SUPERVISOR_SNAPSHOT, autosaved every 5ms (STATUS=autosaved N after each
// save of a new value), saved on the drain signal (STATUS=saved N KIND). A
// handover whose save fails serves on (STATUS=serving on) until the next
// drain signal.
func helperState() error {
	w, err := New()
	if err != nil {
		return err
	}
	defer w.Close()
	ln, err := w.Listener("game")
	if err != nil {
		return err
	}
	var mu sync.Mutex
	count, saved := 0, -1
	st := &State{Worker: w, Autosave: 5 * time.Millisecond,
		Restore: func(path string) error {
			b, err := os.ReadFile(path)
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err == nil {
				count, err = strconv.Atoi(string(b))
			}
			saved = count
			return err
		},
		Save: func(_ context.Context, path string, kind SaveKind) error {
			mu.Lock()
			n := count
			mu.Unlock()
			if kind == SaveAutosave && n == saved {
				return nil
			}
			tmp := path + ".tmp"
			if err := os.WriteFile(tmp, []byte(strconv.Itoa(n)), 0o600); err != nil {
				return err
			}
			if err := os.Rename(tmp, path); err != nil {
				return err
			}
			saved = n
			if kind == SaveAutosave {
				return w.Status(fmt.Sprintf("autosaved %d", n))
			}
			return w.Status(fmt.Sprintf("saved %d %v", n, kind))
		},
	}
	if err := st.Start(context.Background()); err != nil {
		return err
	}
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					if _, err := r.ReadString('\n'); err != nil {
						return
					}
					mu.Lock()
					count++
					n := count
					mu.Unlock()
					fmt.Fprintf(c, "%d\n", n)
				}
			}()
		}
	}()
	if err := st.Ready(); err != nil {
		return err
	}
	for {
		<-w.Draining()
		err := st.HandOver(nil) // not in handover mode: a shutdown save
		if !errors.Is(err, ErrSaveFailed) {
			ln.Close()
			return err
		}
		// The save failed, and the supervisor was told: serve on.
		if err := w.Status("serving on"); err != nil {
			return err
		}
	}
}

// waitStatus waits for the datagram want, skipping other STATUS= ones.
func (c *child) waitStatus(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(readyTimeout)
	for {
		select {
		case got, ok := <-c.msgs:
			switch {
			case !ok || got == exitedMarker:
				t.Fatalf("no %q before the helper exited (%v); stderr:\n%s", want, c.err, c.stderr.String())
			case got == want:
				return
			case !strings.HasPrefix(got, contract.MsgStatusKey):
				t.Fatalf("notify: got %q while waiting for %q", got, want)
			}
		case <-c.done:
			c.markExit(t)
		case <-deadline:
			t.Fatalf("no %q from the helper within %v", want, readyTimeout)
		}
	}
}

// TestStateWorkerProcess runs a worker on State in its own process: it
// restores the counter at start, autosaves it while serving, and saves it
// on the drain signal, a real SIGTERM.
func TestStateWorkerProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snapshot")
	if err := os.WriteFile(path, []byte("7"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c := startChild(t, "state", []*os.File{socketFile(t, ln.(*net.TCPListener))}, []string{"game"},
		contract.EnvSnapshot+"="+path)
	c.expect(t, contract.MsgReady, readyTimeout)

	conn, err := net.DialTimeout("tcp", ln.Addr().String(), readyTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(readyTimeout))
	r := bufio.NewReader(conn)
	inc := func(want int) {
		t.Helper()
		fmt.Fprintf(conn, "INC\n")
		line, err := r.ReadString('\n')
		if err != nil || strings.TrimSpace(line) != strconv.Itoa(want) {
			t.Fatalf("INC: %q, %v; want %d", line, err, want)
		}
	}
	inc(8) // restored 7
	inc(9)
	inc(10)
	c.waitStatus(t, contract.MsgStatusKey+"autosaved 10")
	if b, _ := os.ReadFile(path); string(b) != "10" {
		t.Errorf("snapshot after the autosave: %q, want 10", b)
	}
	inc(11)
	c.signal(t, syscall.SIGTERM)
	c.waitStatus(t, contract.MsgStatusKey+"saved 11 shutdown")
	if err := c.wait(t, exitTimeout); err != nil {
		t.Fatalf("helper: %v; stderr:\n%s", err, c.stderr.String())
	}
	if b, _ := os.ReadFile(path); string(b) != "11" {
		t.Errorf("snapshot after the drain: %q, want 11", b)
	}
}

// TestStateSaveFailedProcess: a worker in handover mode whose snapshot
// directory is gone cannot save on the drain signal: it says HANDOVER=failed
// with the reason and serves on, on the same connection; its autosaves
// resume once the directory is back, and the next drain signal hands over.
func TestStateSaveFailedProcess(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "snapshots")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "snapshot")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c := startChild(t, "state", []*os.File{socketFile(t, ln.(*net.TCPListener))}, []string{"game"},
		contract.EnvMode+"="+contract.ModeHandover, contract.EnvSnapshot+"="+path)
	c.expect(t, contract.MsgReady, readyTimeout)
	conn, err := net.DialTimeout("tcp", ln.Addr().String(), readyTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(readyTimeout))
	r := bufio.NewReader(conn)
	inc := func(want int) {
		t.Helper()
		fmt.Fprintf(conn, "INC\n")
		line, err := r.ReadString('\n')
		if err != nil || strings.TrimSpace(line) != strconv.Itoa(want) {
			t.Fatalf("INC: %q, %v; want %d", line, err, want)
		}
	}
	inc(1)
	c.waitStatus(t, contract.MsgStatusKey+"autosaved 1")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	inc(2)
	c.signal(t, syscall.SIGTERM)
	failed := c.waitPrefix(t, contract.MsgHandoverFailed+"\n"+contract.MsgHandoverErrorKey)
	if !strings.Contains(failed, "no such file or directory") || strings.Count(failed, "\n") != 1 {
		t.Errorf("HANDOVER=failed message %q: want one HANDOVER_ERROR line with the cause", failed)
	}
	c.waitStatus(t, contract.MsgStatusKey+"serving on")
	inc(3) // the same connection, served on
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	c.waitStatus(t, contract.MsgStatusKey+"autosaved 3")
	inc(4)
	c.signal(t, syscall.SIGTERM)
	c.waitStatus(t, contract.MsgStatusKey+"saved 4 handover")
	c.expect(t, contract.MsgHandoverSaved, readyTimeout)
	if err := c.wait(t, exitTimeout); err != nil {
		t.Fatalf("helper: %v; stderr:\n%s", err, c.stderr.String())
	}
	if b, _ := os.ReadFile(path); string(b) != "4" {
		t.Errorf("snapshot after the handover: %q, want 4", b)
	}
}

// waitPrefix waits for a datagram that begins with prefix, skipping STATUS=
// ones, and returns it.
func (c *child) waitPrefix(t *testing.T, prefix string) string {
	t.Helper()
	deadline := time.After(readyTimeout)
	for {
		select {
		case got, ok := <-c.msgs:
			switch {
			case !ok || got == exitedMarker:
				t.Fatalf("no %q... before the helper exited (%v); stderr:\n%s", prefix, c.err, c.stderr.String())
			case strings.HasPrefix(got, prefix):
				return got
			case !strings.HasPrefix(got, contract.MsgStatusKey):
				t.Fatalf("notify: got %q while waiting for %q...", got, prefix)
			}
		case <-c.done:
			c.markExit(t)
		case <-deadline:
			t.Fatalf("no %q... from the helper within %v", prefix, readyTimeout)
		}
	}
}
