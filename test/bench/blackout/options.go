package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

var errHelp = errors.New("help")

// options is the parsed command line.
type options struct {
	sizes     []size // players x connections, measured in this order
	upgrades  int
	seed      string // how the players are made: snapshot or login
	ioRecords int    // records in the snapshot throughput test
	ioRounds  int
	wait      time.Duration // bound of every wait for a log line, a reply or a process
	dir       string        // where snapshots are written
	supBin    string        // prebuilt supervisor
	gameA     string        // prebuilt game builds, alternated
	gameB     string
	// With a baseline, each size is measured for two builds, alternated:
	// this tree's and that of git revision baseline (or prebuilt ones).
	baseline   string
	baseSupBin string
	baseGameA  string
	baseGameB  string
	rounds     int  // sessions of each size per build, the builds alternated
	keep       bool // keep the working directory
	failMiss   bool
	quick      bool
	trace      bool   // print each upgrade's log lines
	logFile    string // append every size's supervisor and game output here
	hotUpdate  bool   // level-1 reloads and level-2 handovers alternated, instead of the handover matrix
	hotLive    bool   // --hot-update with the game's --live: the level-2 handovers are live ones
	rate       int    // --hot-update: commands per second, all clients together, paced; 0: closed loop
	// --compare-live: the game with --live against the snapshot file, one
	// build, sessions alternated; then crash restarts and the accept cost.
	compareLive  bool
	kills        int             // kill -9 of the worker per crash session
	restartMins  []time.Duration // the supervisor's --restart-min (= --restart-max) of each crash session, alternated
	crashStandby bool            // crash sessions with the supervisor's --standby too
	crashRow     size            // players and connections of the crash sessions
	burst        int             // new connections per session in the accept burst
}

const usageText = `usage: go run ./test/bench/blackout [flags]

Measures the blackout of the example game's handover upgrades under the
supervisor, as clients see it and as the supervisor logs it, for each number
of players and connections, and the snapshot file's throughput. Prints
medians, maxima and each target's PASS or MISS.

With --baseline REV it also builds the supervisor and the game at git
revision REV (in a temporary git worktree, with the same go build) and
measures each size for both builds in the same run: --rounds sessions of
--upgrades upgrades each, alternated (new, baseline, new, ...). It prints the
medians over all the upgrades of both side by side with the ratio
new/baseline: "new" is this working tree, uncommitted changes included.

flags:
`

func parseFlags(args []string) (options, error) {
	o := options{}
	var players, conns, rows string
	fs := flag.NewFlagSet("blackout", flag.ContinueOnError)
	fs.StringVar(&players, "players", "1000,10000,100000,1000000", "player table sizes, comma-separated (k and M suffixes allowed)")
	fs.StringVar(&conns, "conns", "100,1000,10000", "connection counts, comma-separated")
	fs.StringVar(&rows, "rows", "", "measure only these `PLAYERS/CONNS` pairs, comma-separated, such as 100k/1k,1M/10k (instead of --players x --conns)")
	fs.IntVar(&o.upgrades, "upgrades", 5, "upgrades per size and session (see --rounds)")
	fs.StringVar(&o.seed, "seed", "snapshot", "how the players are made: `snapshot` (a snapshot of them is written for the game to restore) or login (each logs in and quits over TCP)")
	fs.IntVar(&o.ioRecords, "io-records", 1_000_000, "player records in the snapshot throughput test")
	fs.IntVar(&o.ioRounds, "io-rounds", 3, "rounds of the snapshot throughput test")
	fs.DurationVar(&o.wait, "wait", 2*time.Minute, "bound of every wait for a log line, a reply or a process")
	fs.StringVar(&o.dir, "dir", "", "working `DIR` for the binaries and snapshots (default: a new temporary one)")
	fs.StringVar(&o.supBin, "supervisor-bin", "", "use this prebuilt supervisor instead of building ./cmd/supervisor")
	fs.StringVar(&o.gameA, "game-a", "", "use this prebuilt game as build A (needs --game-b too)")
	fs.StringVar(&o.gameB, "game-b", "", "use this prebuilt game as build B")
	fs.StringVar(&o.baseline, "baseline", "", "also build the supervisor and the game at git revision `REV` (such as HEAD~1) and measure both builds in this run, alternated, side by side")
	fs.StringVar(&o.baseSupBin, "baseline-supervisor-bin", "", "use this prebuilt supervisor as the baseline's (with --baseline-game-a and -b, no --baseline needed)")
	fs.StringVar(&o.baseGameA, "baseline-game-a", "", "use this prebuilt game as the baseline's build A (needs --baseline-game-b too)")
	fs.StringVar(&o.baseGameB, "baseline-game-b", "", "use this prebuilt game as the baseline's build B")
	fs.IntVar(&o.rounds, "rounds", 0, "sessions of --upgrades upgrades per size and build, the builds alternated (default 1, or 3 with --baseline)")
	fs.BoolVar(&o.keep, "keep", false, "keep the working directory")
	fs.BoolVar(&o.failMiss, "fail-on-miss", false, "exit 3 when a target is missed")
	fs.BoolVar(&o.trace, "trace", false, "print the supervisor's and the game's log lines of each upgrade, with the time each was read")
	fs.StringVar(&o.logFile, "log", "", "append the supervisor's and the game's output of every size to `FILE`")
	fs.BoolVar(&o.quick, "quick", false, "a short run: players 1k,100k,1M, connections 100,1k, 3 upgrades, 1 throughput round (flags given explicitly win)")
	fs.IntVar(&o.rate, "rate", defaultHotRate, "with --hot-update: the clients' commands per second, all together, each client sending at its own jittered pace without waiting for replies (an open loop; latency is from each command to its reply); 0: a closed loop, each client sending the next command on the reply, as the blackout matrix does (the figures are then time between replies)")
	var restartMins, crashRow string
	fs.BoolVar(&o.compareLive, "compare-live", false, "measure the game with --live (its data in a shared-memory region, its connections in the supervisor's live fd store) against the snapshot file, one build, sessions alternated (live, file, ...); then kill -9 of the live worker to its clients' first reply, and the accept cost of both; rows default to 1k/1k,100k/1k,1M/1k,1M/10k, rounds to 3")
	fs.IntVar(&o.kills, "kills", 10, "with --compare-live: kill -9 of the worker per crash session (0: no crash sessions)")
	fs.StringVar(&restartMins, "restart-min", "100ms", "with --compare-live: the supervisor's --restart-min (and --restart-max) of the crash sessions, comma-separated, alternated: a worker that served for --restart-max before the kill is restarted at once, so each kill, a second or so after the last restart, is a lone crash")
	fs.BoolVar(&o.crashStandby, "crash-standby", true, "with --compare-live: crash sessions with the supervisor's --standby too, alternated with those without")
	fs.StringVar(&crashRow, "crash-row", "100k/1k", "with --compare-live: `PLAYERS/CONNS` of the crash sessions")
	fs.IntVar(&o.burst, "accept-burst", 1000, "with --compare-live: new connections per session, dialled 64 at a time, each logging in, before the clients connect")
	fs.BoolVar(&o.hotLive, "hot-live", false, "with --hot-update: run the game with --live, so that the level-2 handovers are live ones (the clients paced: the handover's own blackout, without the closed loop's queue)")
	fs.BoolVar(&o.hotUpdate, "hot-update", false, "measure the two levels of hot update instead: --upgrades level-1 reloads (ctl reload, the scripts alternated) and as many level-2 handovers (SIGHUP), alternated, on one build; rows default to 100k/1k")
	fs.Usage = func() {
		fmt.Fprint(os.Stderr, usageText)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, errHelp
		}
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q (try --help)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick {
		if !set["players"] {
			players = "1000,100000,1000000"
		}
		if !set["conns"] {
			conns = "100,1000"
		}
		if !set["upgrades"] {
			o.upgrades = 3
		}
		if !set["io-rounds"] {
			o.ioRounds = 1
		}
	}
	if o.compareLive && !set["io-rounds"] {
		o.ioRounds = 0 // the same for both
	}
	if o.compareLive && rows == "" && !set["players"] && !set["conns"] {
		rows = "1k/1k,100k/1k,1M/1k,1M/10k"
	}
	if o.compare() && !set["io-rounds"] {
		o.ioRounds = 0 // package state is the driver's: the same for both builds
	}
	if o.rounds == 0 {
		o.rounds = 1
		if o.compare() || o.compareLive {
			o.rounds = 3
		}
	}
	if o.hotUpdate && rows == "" && !set["players"] && !set["conns"] {
		rows = "100k/1k"
	}
	var err error
	if o.compareLive {
		if o.restartMins, err = parseDurations(restartMins); err != nil {
			return o, fmt.Errorf("--restart-min: %w", err)
		}
		cr, err := parseRows(crashRow)
		if err != nil || len(cr) != 1 {
			return o, fmt.Errorf("--crash-row %q: want one PLAYERS/CONNS pair, such as 100k/1k", crashRow)
		}
		o.crashRow = cr[0]
	}
	if rows != "" {
		if set["players"] || set["conns"] {
			return o, errors.New("--rows replaces --players and --conns")
		}
		o.sizes, err = parseRows(rows)
	} else {
		o.sizes, err = crossSizes(players, conns)
	}
	if err != nil {
		return o, err
	}
	switch {
	case o.upgrades < 1:
		return o, errors.New("--upgrades must be 1 or more")
	case o.seed != "snapshot" && o.seed != "login":
		return o, fmt.Errorf("--seed %q: want snapshot or login", o.seed)
	case o.ioRecords < 0 || o.ioRounds < 0:
		return o, errors.New("--io-records and --io-rounds must not be negative")
	case o.wait <= 0:
		return o, errors.New("--wait must be positive")
	case (o.gameA == "") != (o.gameB == ""):
		return o, errors.New("--game-a and --game-b go together")
	case (o.baseGameA == "") != (o.baseGameB == ""):
		return o, errors.New("--baseline-game-a and --baseline-game-b go together")
	case o.baseline == "" && (o.baseSupBin == "") != (o.baseGameA == ""):
		return o, errors.New("without --baseline REV, give all of --baseline-supervisor-bin, --baseline-game-a and --baseline-game-b")
	case o.rounds < 1:
		return o, errors.New("--rounds must be 1 or more")
	case o.rate < 0:
		return o, errors.New("--rate must not be negative")
	case set["rate"] && !o.hotUpdate:
		return o, errors.New("--rate goes with --hot-update")
	case o.hotLive && !o.hotUpdate:
		return o, errors.New("--hot-live goes with --hot-update")
	case o.hotUpdate && (o.compare() || o.seed != "snapshot"):
		return o, errors.New("--hot-update takes neither a baseline nor --seed login")
	case o.compareLive && (o.compare() || o.hotUpdate || o.seed != "snapshot"):
		return o, errors.New("--compare-live takes neither a baseline, --hot-update nor --seed login")
	case !o.compareLive && (set["kills"] || set["restart-min"] || set["crash-row"] || set["accept-burst"]):
		return o, errors.New("--kills, --restart-min, --crash-row and --accept-burst go with --compare-live")
	case o.kills < 0 || o.burst < 0:
		return o, errors.New("--kills and --accept-burst must not be negative")
	}
	return o, nil
}

// compare says whether a baseline build is measured too.
func (o options) compare() bool {
	return o.baseline != "" || o.baseSupBin != ""
}

// size is one row of the benchmark: players in the game, clients connected.
type size struct{ players, conns int }

// crossSizes is every pair of the players and connections lists.
func crossSizes(players, conns string) ([]size, error) {
	ps, err := parseSizes(players)
	if err != nil {
		return nil, fmt.Errorf("--players: %w", err)
	}
	cs, err := parseSizes(conns)
	if err != nil {
		return nil, fmt.Errorf("--conns: %w", err)
	}
	var out []size
	for _, p := range ps {
		for _, c := range cs {
			out = append(out, size{p, c})
		}
	}
	return out, nil
}

// parseRows reads "100k/1k,1M/10k".
func parseRows(s string) ([]size, error) {
	var out []size
	for _, row := range strings.Split(s, ",") {
		p, c, ok := strings.Cut(strings.TrimSpace(row), "/")
		ps, err1 := parseSizes(p)
		cs, err2 := parseSizes(c)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("--rows: %q: want PLAYERS/CONNS pairs, such as 100k/1k,1M/10k", row)
		}
		out = append(out, size{ps[0], cs[0]})
	}
	return out, nil
}

// parseSizes reads "1000,10k,1M".
func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		mult := 1
		switch {
		case strings.HasSuffix(f, "k"):
			mult, f = 1000, strings.TrimSuffix(f, "k")
		case strings.HasSuffix(f, "M"):
			mult, f = 1_000_000, strings.TrimSuffix(f, "M")
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q: want positive numbers, such as 1000,10k,1M", s)
		}
		out = append(out, n*mult)
	}
	return out, nil
}

// parseDurations reads "100ms,1ms": positive durations.
func parseDurations(s string) ([]time.Duration, error) {
	var out []time.Duration
	for _, f := range strings.Split(s, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(f))
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("%q: want positive durations, such as 100ms,1ms", s)
		}
		out = append(out, d)
	}
	return out, nil
}
