package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/procswitch/supervisor/handoff"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1 // could not start or serve
	exitUsage = 2 // bad flags or a bad map
)

// HTTP server bounds, so that a slow or idle client cannot hold a worker
// for long. idleTimeout also bounds how long an idle keep-alive connection
// keeps a draining worker alive (handoff.ServeHTTP's grace period), and
// drainBound the whole drain: then the connections left are closed, under
// the supervisor's default --drain-timeout of 30s.
const (
	readHeaderTimeout = 5 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 10 * time.Second
	drainBound        = 25 * time.Second
)

type config struct {
	listen     string
	socketName string
	mapFile    string
}

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// run is the whole program; it returns the exit status.
func run(args []string, stderr io.Writer) int {
	logger := log.New(stderr, "pathfind: ", 0)
	cfg, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stderr, usage)
		return exitOK
	}
	if err != nil {
		logger.Print(err)
		return exitUsage
	}
	grid, source, err := loadMap(cfg.mapFile)
	if err != nil {
		logger.Print(err)
		return exitUsage
	}
	if err := serve(cfg, grid, source, logger); err != nil {
		logger.Print(err)
		return exitFail
	}
	return exitOK
}

const usage = `usage: pathfind [--listen ADDR] [--socket-name NAME] [--map FILE]
A* pathfinding over HTTP: GET /path?from=X,Y&to=X,Y, GET /healthz.
  --listen ADDR       address to bind when no socket is passed (default 127.0.0.1:8080)
  --socket-name NAME  name of the passed socket to serve (default "http")
  --map FILE          map file: one row per line, '.' free, '#' blocked (default: built-in 512x512)
`

func parseFlags(args []string) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("pathfind", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&cfg.listen, "listen", "127.0.0.1:8080", "")
	fs.StringVar(&cfg.socketName, "socket-name", "http", "")
	fs.StringVar(&cfg.mapFile, "map", "", "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, fmt.Errorf("%w (try --help)", err)
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q (try --help)", fs.Arg(0))
	}
	if _, _, err := net.SplitHostPort(cfg.listen); err != nil {
		return cfg, fmt.Errorf("--listen %q: want HOST:PORT, such as 127.0.0.1:8080: %w", cfg.listen, err)
	}
	return cfg, nil
}

// loadMap returns the map and a word on where it came from, for the logs.
func loadMap(file string) (*Grid, string, error) {
	if file == "" {
		g, err := DefaultMap()
		return g, "built-in", err
	}
	g, err := LoadMap(file)
	return g, file, err
}

// serve runs the service until it has drained.
func serve(cfg config, grid *Grid, source string, logger *log.Logger) error {
	solver := NewSolver(grid)
	check, err := newSelfCheck(grid, solver)
	if err != nil {
		return err
	}
	w, err := handoff.New()
	if err != nil {
		return err
	}
	defer w.Close()
	ln, err := w.Listen(cfg.socketName, "tcp", cfg.listen)
	if err != nil {
		return err
	}
	svc := &service{grid: grid, solver: solver, check: check, version: version, pid: os.Getpid()}
	how := "on its own: no socket passed, bound --listen"
	if w.Supervised() {
		how = "under a supervisor"
	}
	logger.Printf("version %s, pid %d: serving the %s %dx%d map on %s (%s)",
		version, svc.pid, source, grid.Width(), grid.Height(), ln.Addr(), how)
	if err := svc.run(w, ln, logger); err != nil {
		return err
	}
	logger.Printf("pid %d: drained, exiting", svc.pid)
	return nil
}

// run reports ready, serves until the drain signal and drains.
func (svc *service) run(w *handoff.Worker, ln net.Listener, logger *log.Logger) error {
	drain := w.Draining() // the drain signal, SIGTERM or SIGINT
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopping := make(chan struct{})
	go func() {
		defer close(stopping)
		<-drain
		time.AfterFunc(drainBound, cancel)
		if err := w.Stopping(); err != nil {
			logger.Printf("notify stopping: %v", err)
		}
	}()
	if every := w.WatchdogInterval() / 2; every > 0 {
		go watchdog(every, drain, svc.check.run, w.Watchdog, logger)
	}
	if err := w.Ready(); err != nil {
		ln.Close()
		return fmt.Errorf("notify ready: %w", err)
	}
	status := fmt.Sprintf("serving %dx%d map on %s", svc.grid.Width(), svc.grid.Height(), ln.Addr())
	if err := w.Status(status); err != nil {
		logger.Printf("notify status: %v", err)
	}
	if err := handoff.ServeHTTP(ctx, newServer(svc, logger), ln, drain); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	<-stopping // drain is closed; the notification is bounded by handoff
	return nil
}

func newServer(svc *service, logger *log.Logger) *http.Server {
	return &http.Server{
		Handler:           newHandler(svc),
		ReadHeaderTimeout: readHeaderTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          logger,
	}
}

// watchdog calls ping every interval once check passes, until done is
// closed. A failed check skips the ping, so the supervisor, no longer
// pinged, restarts a worker that cannot answer.
func watchdog(every time.Duration, done <-chan struct{}, check, ping func() error, logger *log.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		if err := check(); err != nil {
			logger.Printf("watchdog: not pinging: %v", err)
			continue
		}
		if err := ping(); err != nil {
			logger.Printf("watchdog: %v", err)
		}
	}
}
