package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"syscall"
	"time"

	"github.com/procswitch/supervisor/handoff"
)

// The server child: the parent re-executes this program with childEnv set
// to the variant, and profileEnv, when set, to a CPU profile's path.
const (
	childEnv   = "SERVEHTTP_BENCH_CHILD"
	profileEnv = "SERVEHTTP_BENCH_PROFILE"
)

// The variants: the same handler and server, served two ways.
const (
	bare      = "serve"     // http.Server.Serve(ln)
	servehttp = "servehttp" // handoff.ServeHTTP(ctx, srv, ln, drain)
)

// drainBound bounds the child's drain, once the parent has stopped its load
// and sent SIGTERM.
const drainBound = 5 * time.Second

// handler is pathfind's /healthz in miniature: two headers and a small
// JSON body.
func handler() http.Handler {
	pid := strconv.Itoa(os.Getpid())
	body := []byte(`{"status":"ok","pid":` + pid + "}\n")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pid", pid)
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
}

// serveChild listens on a loopback port, writes its address on stdout and
// serves until SIGTERM.
func serveChild(variant string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	if path := os.Getenv(profileEnv); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	drain := make(chan struct{})
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sigs; close(drain) }()
	srv := &http.Server{Handler: handler(), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Second}
	fmt.Println(ln.Addr())
	switch variant {
	case bare:
		go func() { <-drain; srv.Close() }()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	case servehttp:
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() { <-drain; time.AfterFunc(drainBound, cancel) }()
		return handoff.ServeHTTP(ctx, srv, ln, drain)
	}
	return fmt.Errorf("unknown variant %q", variant)
}
