package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"time"
)

var errHelp = errors.New("help")

// options is the parsed command line.
type options struct {
	upgrades       int           // phase 1: upgrades per client mode
	every          time.Duration // phase 1: from one SIGHUP to the next
	window         time.Duration // phase 1: "after an upgrade" is this long after a SIGHUP
	steady         time.Duration // phase 1: load without upgrades before the first and after the last window
	clients        int           // phase 1: concurrent clients
	tpClients      int           // phase 2: concurrent keep-alive clients
	rounds         int           // phase 2: rounds of bare then supervised
	round          time.Duration // phase 2: measured time of each target in a round
	flatUpgrades   int           // phase 3: back-to-back upgrades
	flatClients    int           // phase 3: light load clients per mode, 0 for none
	flatPause      time.Duration // phase 3: pause between a light client's requests
	warmup         time.Duration // load before measuring, in every phase
	drainTimeout   time.Duration // the supervisor's --drain-timeout
	requestTimeout time.Duration // per request
	wait           time.Duration // for any expected log line
	seed           uint64
	queries        int
	phases         map[string]bool
	jsonFile       string
	supervisorBin  string // prebuilt, instead of building ./cmd/supervisor
	pathfindBin    string // prebuilt, instead of building ./example-game/pathfind
	// With a baseline, every phase measures two builds, alternated: this
	// tree's and that of git revision baseline (or prebuilt ones).
	baseline              string
	baselineSupervisorBin string
	baselinePathfindBin   string
	batches               int // the upgrades phase's batches per build and client mode, with a baseline
	flatBatch             int // the flatness phase's upgrades per batch, with a baseline
	quick                 bool
	failOnMiss            bool
}

var allPhases = []string{"upgrades", "throughput", "flatness"}

const usageText = `usage: go run ./test/bench/switchbench [flags]

Builds the supervisor and pathfind, then measures, with clients that never
retry: upgrades under load in both client modes, the throughput of pathfind
under the supervisor against pathfind run bare, and the supervisor's memory,
fds and children across many upgrades. Prints each figure with its target.

With --baseline REV it also builds both at git revision REV (in a temporary
git worktree, with the same go build) and measures the two builds in the same
run, alternated within every phase, then prints each figure for both side by
side with the ratio new/baseline: "new" is this working tree, uncommitted
changes included.

flags:
`

func parseFlags(args []string) (options, error) {
	var o options
	var phases string
	fs := flag.NewFlagSet("switchbench", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fs.IntVar(&o.upgrades, "upgrades", 20, "upgrades under load, in each client mode")
	fs.DurationVar(&o.every, "every", time.Second, "time from one SIGHUP to the next in the upgrades phase")
	fs.DurationVar(&o.window, "window", 2*time.Second, "a request under way this long after a SIGHUP counts as \"after an upgrade\"")
	fs.DurationVar(&o.steady, "steady", 5*time.Second, "load without upgrades before the first SIGHUP and after the last window")
	fs.IntVar(&o.clients, "clients", 4, "concurrent clients in the upgrades phase")
	fs.IntVar(&o.tpClients, "tp-clients", 4, "concurrent keep-alive clients in the throughput phase")
	fs.IntVar(&o.rounds, "rounds", 5, "throughput rounds, each bare then supervised")
	fs.DurationVar(&o.round, "round", 4*time.Second, "measured time of each target in a throughput round")
	fs.IntVar(&o.flatUpgrades, "flat-upgrades", 1000, "back-to-back upgrades in the flatness phase")
	fs.IntVar(&o.flatClients, "flat-clients", 1, "light-load clients per client mode during the flatness phase (0: none)")
	fs.DurationVar(&o.flatPause, "flat-pause", 10*time.Millisecond, "pause between a light-load client's requests")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "load before measuring starts, in every phase and round (throughput rounds use half)")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 10*time.Second, "the supervisor's --drain-timeout")
	fs.DurationVar(&o.requestTimeout, "request-timeout", 10*time.Second, "bound of each request")
	fs.DurationVar(&o.wait, "wait", 30*time.Second, "bound of every wait for a process or a log line")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the query mix and of the clients' choices")
	fs.IntVar(&o.queries, "queries", 256, "distinct /path queries in the mix")
	fs.StringVar(&phases, "phases", strings.Join(allPhases, ","), "phases to run, comma-separated: "+strings.Join(allPhases, ", "))
	fs.StringVar(&o.jsonFile, "json", "", "also write the figures to this `FILE` as JSON")
	fs.StringVar(&o.supervisorBin, "supervisor-bin", "", "use this prebuilt supervisor `BINARY` instead of building ./cmd/supervisor")
	fs.StringVar(&o.pathfindBin, "pathfind-bin", "", "use this prebuilt pathfind `BINARY` instead of building ./example-game/pathfind")
	fs.StringVar(&o.baseline, "baseline", "", "also build the supervisor and pathfind at git revision `REV` (such as HEAD~1) and measure both builds in this run, alternated, side by side")
	fs.StringVar(&o.baselineSupervisorBin, "baseline-supervisor-bin", "", "with --baseline: use this prebuilt supervisor `BINARY` as the baseline's (with --baseline-pathfind-bin, no --baseline needed)")
	fs.StringVar(&o.baselinePathfindBin, "baseline-pathfind-bin", "", "with --baseline: use this prebuilt pathfind `BINARY` as the baseline's")
	fs.IntVar(&o.batches, "batches", 4, "with --baseline: the upgrades of each client mode in this many batches per build, alternated (each with --steady/N of steady load before and after)")
	fs.IntVar(&o.flatBatch, "flat-batch", 0, "with --baseline: flatness upgrades per batch, alternated between the builds (default: a tenth of --flat-upgrades)")
	fs.BoolVar(&o.quick, "quick", false, "a short smoke run: 5 upgrades, 2 rounds of 2s, 50 flatness upgrades, 2s steady, 2 batches with --baseline (flags given explicitly win)")
	fs.BoolVar(&o.failOnMiss, "fail-on-miss", false, "exit 3 when a target is missed")
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
		return o, fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	if o.quick {
		o.applyQuick(fs)
	}
	if o.flatBatch == 0 {
		o.flatBatch = max(1, o.flatUpgrades/10)
	}
	var err error
	if o.phases, err = parsePhases(phases); err != nil {
		return o, err
	}
	return o, o.check()
}

// applyQuick shortens every phase, except where a flag was given.
func (o *options) applyQuick(fs *flag.FlagSet) {
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	quick := map[string]func(){
		"upgrades":      func() { o.upgrades = 5 },
		"rounds":        func() { o.rounds = 2 },
		"round":         func() { o.round = 2 * time.Second },
		"flat-upgrades": func() { o.flatUpgrades = 50 },
		"steady":        func() { o.steady = 2 * time.Second },
		"batches":       func() { o.batches = 2 },
	}
	for name, apply := range quick {
		if !set[name] {
			apply()
		}
	}
}

func parsePhases(s string) (map[string]bool, error) {
	m := make(map[string]bool)
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if !slices.Contains(allPhases, p) {
			return nil, fmt.Errorf("--phases: unknown phase %q; want some of %s", p, strings.Join(allPhases, ","))
		}
		m[p] = true
	}
	return m, nil
}

func (o options) check() error {
	switch {
	case o.upgrades < 1 || o.rounds < 1 || o.flatUpgrades < 1:
		return errors.New("--upgrades, --rounds and --flat-upgrades must be at least 1")
	case o.clients < 1 || o.tpClients < 1 || o.flatClients < 0:
		return errors.New("--clients and --tp-clients must be at least 1, --flat-clients at least 0")
	case o.queries < 1:
		return errors.New("--queries must be at least 1")
	case o.every <= 0 || o.window <= 0 || o.round <= 0 || o.steady < 0 || o.warmup < 0 || o.flatPause < 0:
		return errors.New("--every, --window and --round must be positive; --steady, --warmup and --flat-pause not negative")
	case o.drainTimeout <= 0 || o.requestTimeout <= 0 || o.wait <= 0:
		return errors.New("--drain-timeout, --request-timeout and --wait must be positive")
	case o.baseline == "" && (o.baselineSupervisorBin == "") != (o.baselinePathfindBin == ""):
		return errors.New("--baseline-supervisor-bin and --baseline-pathfind-bin go together, or with --baseline REV")
	case o.compare() && (o.batches < 1 || o.batches > o.upgrades || o.flatBatch < 1):
		return errors.New("--batches must be from 1 to --upgrades, --flat-batch at least 1")
	}
	return nil
}

// describe is the configuration, for the report.
func (o options) describe() map[string]any {
	var phases []string
	for p := range o.phases {
		phases = append(phases, p)
	}
	sort.Strings(phases)
	m := map[string]any{
		"upgrades": o.upgrades, "every": o.every.String(), "window": o.window.String(), "steady": o.steady.String(),
		"clients": o.clients, "tp_clients": o.tpClients, "rounds": o.rounds, "round": o.round.String(),
		"flat_upgrades": o.flatUpgrades, "flat_clients": o.flatClients, "flat_pause": o.flatPause.String(),
		"warmup": o.warmup.String(), "drain_timeout": o.drainTimeout.String(), "request_timeout": o.requestTimeout.String(),
		"wait": o.wait.String(), "seed": o.seed, "queries": o.queries, "phases": phases, "quick": o.quick,
	}
	if o.compare() {
		m["baseline"], m["batches"], m["flat_batch"] = o.baseline, o.batches, o.flatBatch
	}
	return m
}

// compare says whether a baseline build is measured too.
func (o options) compare() bool {
	return o.baseline != "" || o.baselineSupervisorBin != ""
}

// upgradeBatches is the number of batches of the upgrades phase.
func (o options) upgradeBatches() int {
	if o.compare() {
		return o.batches
	}
	return 1
}

// flatBatchSize is the number of flatness upgrades between switches of build.
func (o options) flatBatchSize() int {
	if o.compare() {
		return o.flatBatch
	}
	return o.flatUpgrades
}
