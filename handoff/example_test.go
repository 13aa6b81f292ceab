package handoff_test

import (
	"fmt"
	"io"
	"log"
	"net/http"
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
// request, and returns once the last connection is closed.
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
	go func() {
		<-w.Draining()
		w.Stopping()
	}()
	w.Ready()
	if err := handoff.ServeHTTP(srv, ln, w.Draining()); err != nil {
		log.Fatal(err)
	}
}
