package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strings"
	"time"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1 // could not start, restore, save or hand over
	exitUsage = 2 // bad flags
)

type config struct {
	listen       string
	socketName   string
	snapshot     string
	autosave     time.Duration
	stock        int64
	scripts      string
	handoverWait time.Duration
	live         bool // the data in a shared-memory region, the connections in the fd store
	livePlayers  int  // the region's room for players
	liveConns    bool // --live: store each connection too (false: only the data survives a crash)
}

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// run is the whole program; it returns the exit status.
func run(args []string, stderr io.Writer) int {
	logger := log.New(stderr, fmt.Sprintf("gameserver[%d]: ", os.Getpid()), 0)
	cfg, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stderr, usage)
		return exitOK
	}
	if err != nil {
		logger.Print(err)
		return exitUsage
	}
	if err := serve(cfg, logger); err != nil {
		logger.Print(err)
		return exitFail
	}
	return exitOK
}

const usage = `usage: gameserver [flags]
A game over TCP, one text line per command and per reply: LOGIN, WORK, BUY,
STATUS, STOCK, SHOP, QUIT. Meant to run under the supervisor in handover mode, so
that players keep their coins and their connections across upgrades:
  supervisor --mode handover --snapshot /var/lib/game/snapshot \
    --listen game=tcp://0.0.0.0:7000 -- gameserver
  --listen ADDR              address to bind when no socket is passed (default 127.0.0.1:7000)
  --socket-name NAME         name of the passed socket to serve (default "game")
  --snapshot PATH            snapshot file, when the supervisor names none (default: none,
                             nothing is saved)
  --autosave DURATION        save the snapshot this often, if anything changed (default 5s; 0: off)
  --stock N                  each good's stock on a first start (default 1000000)
  --handover-wait DURATION   how long a worker started ahead of a handover waits for the
                             previous one to save (default 2m)
  --scripts DIR              read the rules (game.lua, shop.lua) from DIR (default: the
                             scripts built in)
  --live                     keep the data in shared memory and every connection in the
                             supervisor's fd store, so that a crash of this process costs the
                             players a pause, not their connection (needs --mode handover)
  --live-players N           the shared memory's room for players (default 1000000)
  --live-conns=false         with --live, store the connections only at a handover, not as
                             they are accepted: a crash then ends them (the players reconnect
                             to their coins); to measure what storing each one costs
                             (default true)
`

func parseFlags(args []string) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("gameserver", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&cfg.listen, "listen", "127.0.0.1:7000", "")
	fs.StringVar(&cfg.socketName, "socket-name", "game", "")
	fs.StringVar(&cfg.snapshot, "snapshot", "", "")
	fs.DurationVar(&cfg.autosave, "autosave", 5*time.Second, "")
	fs.Int64Var(&cfg.stock, "stock", 1_000_000, "")
	fs.DurationVar(&cfg.handoverWait, "handover-wait", 2*time.Minute, "")
	fs.StringVar(&cfg.scripts, "scripts", "", "")
	fs.BoolVar(&cfg.live, "live", false, "")
	fs.IntVar(&cfg.livePlayers, "live-players", 1_000_000, "")
	fs.BoolVar(&cfg.liveConns, "live-conns", true, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, fmt.Errorf("%w (try --help)", err)
	}
	switch {
	case fs.NArg() > 0:
		return cfg, fmt.Errorf("unexpected argument %q (try --help)", fs.Arg(0))
	case cfg.autosave < 0:
		return cfg, errors.New("--autosave must not be negative (0 turns it off)")
	case cfg.stock < 0:
		return cfg, errors.New("--stock must not be negative")
	case cfg.handoverWait <= 0:
		return cfg, errors.New("--handover-wait must be a positive duration, such as 2m")
	case cfg.livePlayers < 1 || cfg.livePlayers > 100_000_000:
		return cfg, errors.New("--live-players must be 1 to 100000000")
	}
	if _, _, err := net.SplitHostPort(cfg.listen); err != nil {
		return cfg, fmt.Errorf("--listen %q: want HOST:PORT, such as 127.0.0.1:7000: %w", cfg.listen, err)
	}
	return cfg, nil
}

// cleanVersion makes the build's version fit in a reply's field.
func cleanVersion(v string) string {
	v = strings.Map(func(r rune) rune {
		if r <= ' ' || r == 0x7f {
			return '_'
		}
		return r
	}, v)
	if v == "" {
		return "dev"
	}
	return v
}
