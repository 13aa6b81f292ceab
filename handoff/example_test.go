package handoff_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/procswitch/supervisor/handoff"
)

// A worker reads its environment once, at the start of main.
func ExampleNew() {
	w, err := handoff.New()
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	if !w.Supervised() {
		log.Print("not started by the supervisor: serving on its own; run it under the supervisor for seamless upgrades")
	}
	fmt.Println("passed sockets:", w.Names())
}

// Listen returns the socket the supervisor passed under that name, and binds
// the address itself only when the binary runs on its own.
func ExampleWorker_Listen() {
	w, err := handoff.New()
	if err != nil {
		log.Fatal(err)
	}
	ln, err := w.Listen("http", "tcp", "127.0.0.1:8080")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	fmt.Println("serving on", ln.Addr())
}

// Ready lets the previous generation drain: send it once the worker can
// answer. A worker with a watchdog pings it at half the interval.
func ExampleWorker_Ready() {
	w, err := handoff.New()
	if err != nil {
		log.Fatal(err)
	}
	// ... take the listeners, load the configuration ...
	if err := w.Ready(); err != nil {
		log.Printf("telling the supervisor: %v", err)
	}
	w.Status("serving")
	if d := w.WatchdogInterval(); d > 0 {
		go func() {
			for range time.Tick(d / 2) {
				w.Watchdog()
			}
		}()
	}
}

// ServeHTTP serves until the drain signal, then drains without losing a
// request, and returns once the last connection is closed. Here the drain
// may take 20 seconds once it began: then the connections left are closed.
func ExampleServeHTTP() {
	w, err := handoff.New()
	if err != nil {
		log.Fatal(err)
	}
	ln, err := w.Listen("http", "tcp", "127.0.0.1:8080")
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(rw http.ResponseWriter, r *http.Request) {
		io.WriteString(rw, "hello\n")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-w.Draining()
		w.Stopping()
		time.AfterFunc(20*time.Second, cancel) // the drain's bound
	}()
	w.Ready()
	if err := handoff.ServeHTTP(ctx, srv, ln, w.Draining()); err != nil {
		log.Fatal(err)
	}
}

// A stateful worker keeps its data in a State: restored at start, saved
// when it is told to stop (and, under the supervisor in handover mode,
// handed to the next worker with its connections). Here the worker runs on
// its own, twice: the second run restores what the first saved. The signal
// it sends itself stands in for the supervisor's drain signal.
func ExampleState() {
	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "snapshot")
	for range 2 {
		runCounter(path)
	}
	// Output:
	// no snapshot: a first start
	// serving; counted to 3
	// saving 3 (shutdown)
	// restored 3
	// serving; counted to 6
	// saving 6 (shutdown)
}

// runCounter is a worker whose state is one counter.
func runCounter(path string) {
	w, err := handoff.New()
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	var count int
	st := &handoff.State{
		Worker: w,
		Path:   path, // under the supervisor: "" for its --snapshot
		Restore: func(path string) error {
			b, err := os.ReadFile(path)
			if errors.Is(err, fs.ErrNotExist) {
				fmt.Println("no snapshot: a first start")
				return nil
			}
			if err != nil {
				return err
			}
			count, err = strconv.Atoi(string(b))
			fmt.Println("restored", count)
			return err
		},
		Resume: func(conns []handoff.Conn) {
			// Serve each connection handed over, found by its name.
		},
		Save: func(ctx context.Context, path string, kind handoff.SaveKind) error {
			fmt.Printf("saving %d (%v)\n", count, kind)
			return writeAtomically(path, []byte(strconv.Itoa(count)))
		},
	}
	if err := st.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	if err := st.Ready(); err != nil {
		log.Fatal(err)
	}
	count += 3 // serving
	fmt.Println("serving; counted to", count)
	syscall.Kill(os.Getpid(), syscall.SIGTERM) // as the supervisor would
	<-w.Draining()
	// Stop serving, then:
	if err := st.HandOver(nil); err != nil {
		log.Fatal(err)
	}
}

// writeAtomically writes a file so that a crash leaves the old one whole;
// package state does this (and more) for real snapshots.
func writeAtomically(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Autosaves bound what a crash loses: State saves every Autosave once the
// worker is ready, concurrently with its service, until HandOver, which
// abandons an autosave in progress (its context ends) before the last save.
func ExampleState_autosave() {
	w, err := handoff.New()
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	var mu sync.Mutex // the data: the service and the autosaves share it
	players := map[string]int{"alice": 100}
	autosaved := make(chan struct{}, 1)
	st := &handoff.State{
		Worker:   w,
		Path:     filepath.Join(os.TempDir(), "example-autosave"),
		Autosave: 10 * time.Millisecond,
		Restore:  func(path string) error { return nil },
		Save: func(ctx context.Context, path string, kind handoff.SaveKind) error {
			mu.Lock()
			b, err := json.Marshal(players) // a copy, taken under the lock
			mu.Unlock()
			if err != nil {
				return err
			}
			if kind == handoff.SaveAutosave {
				select {
				case autosaved <- struct{}{}:
				default:
				}
				return nil // a real worker writes b, and stops early when ctx ends
			}
			fmt.Printf("%v: %s\n", kind, b)
			return nil
		},
	}
	if err := st.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	st.Ready()
	mu.Lock()
	players["alice"] += 5
	mu.Unlock()
	<-autosaved
	fmt.Println("autosaved while serving")
	if err := st.HandOver(nil); err != nil {
		log.Fatal(err)
	}
	// Output:
	// autosaved while serving
	// shutdown: {"alice":105}
}

// A worker that reloads its scripts in place on `supervisor ctl reload`,
// and says which version it runs, at start and after each reload.
func ExampleWorker_Reloads() {
	w, err := handoff.New()
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	load := func() (version string, err error) { return "scripts-42", nil } // the worker's own
	version, err := load()
	if err != nil {
		log.Fatal(err)
	}
	w.ReportVersion(version)
	w.Ready()
	go func() {
		for r := range w.Reloads() {
			if version, err := load(); err != nil {
				r.Failed(err) // RELOAD=failed: serve on with the scripts loaded before
			} else {
				r.Done(version) // READY=1, VERSION=
			}
		}
	}()
	fmt.Println("serving", version)
	// Output: serving scripts-42
}
