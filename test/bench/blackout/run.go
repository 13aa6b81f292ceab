package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/procswitch/supervisor/test/procwatch"
)

// sizeResult is what one size (players, connections) measured.
type sizeResult struct {
	players, conns int
	skipped        string // why it was not measured
	err            error  // why it stopped early

	seedMS       float64   // the last session's writing of the seeded snapshot (or logging the players in)
	coldMS       []float64 // per session, the first worker's ready_ms: restoring the players cold
	upgrades     int       // attempted, over the sessions
	failed       []string  // reasons of failed upgrades
	supBlackout  []float64 // blackout_ms per successful upgrade
	cliMedian    []float64 // per upgrade: median over connections of the client blackout
	cliMax       []float64 // per upgrade: max over connections
	saveMS       []float64 // supervisor's save_ms: drain signal to HANDOVER=saved
	gameStop     []float64 // the game's own: stopping the sessions on the drain signal
	gameSave     []float64 // the game's own: writing the snapshot
	gameStore    []float64 // the game's own: storing the connections with the supervisor (up to 253 a datagram) and HANDOVER=saved
	gameRestore  []float64 // the game's own: restoring the snapshot and the sessions
	gameSnap     []float64 // the game's own: of the restore, reading the snapshot
	gameResume   []float64 // the game's own: of the restore, resuming the sessions
	intervals    []float64 // steady state: median over connections of the time between replies
	moved        []int     // connections in each upgrade's success line
	passMS       []float64 // the supervisor's pass_ms: passing the stored connections to the new worker, GO
	liveTakeover []float64 // --live: of the game's restore, taking the region over
	acceptUS     []float64 // per session: median over the burst's connections of dial to LOGIN's reply, µs
	acceptRate   []float64 // per session: the burst's connections per second
	acceptSeqUS  []float64 // per session: the same, one connection at a time, µs
	notices      int       // NOTICE lines the clients saw (--live)
}

func run(ctx context.Context, o options) (int, error) {
	interrupt := ctx.Done()
	dir := o.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "blackout-")
		if err != nil {
			return 1, err
		}
		dir = d
	}
	if !o.keep && o.dir == "" {
		defer os.RemoveAll(dir)
	}
	soft, hard, err := raiseNoFile()
	if err != nil {
		return 1, err
	}
	fmt.Printf("blackout benchmark: %d CPUs (GOMAXPROCS %d), %s/%s, %s; RLIMIT_NOFILE %d raised to %d\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, cpuModel(), soft, hard)
	fmt.Printf("load average at the start: %s (others' work on the machine shows in every figure)\n", procwatch.LoadAvg())
	fmt.Printf("working directory %s (snapshots there); players seeded by %s; %d upgrades per size\n", dir, o.seed, o.upgrades)
	fmt.Println("the game has no flag to seed players: they are seeded by " + map[string]string{
		"snapshot": "a snapshot of them written for the game to restore at its first start",
		"login":    "logging each in and out over TCP",
	}[o.seed])
	began := time.Now()
	builds, err := buildAll(ctx, o, dir)
	if err != nil {
		return 1, err
	}
	fmt.Printf("built the supervisor and the game (%s, %s) in %v\n", versionA, versionB, time.Since(began).Round(time.Second))
	if o.compareLive {
		fmt.Printf("one build, %s; each size: %d sessions of %d upgrades with the game's --live and as many without (the snapshot file), alternated (live first)\n",
			builds[0].Src, o.rounds, o.upgrades)
	} else if len(builds) > 1 {
		fmt.Printf("new:      %s\nbaseline: %s\n", builds[0].Src, builds[1].Src)
		fmt.Printf("each size: %d sessions of %d upgrades per build, alternated (new first)\n", o.rounds, o.upgrades)
	}
	fmt.Println()

	if o.hotUpdate {
		return runHotUpdate(o, builds[0], dir, began, interrupt)
	}
	results := make([][]*sizeResult, len(builds)) // per build, per size
	for _, sz := range o.sizes {
		rs, err := measureRows(o, builds, dir, sz, hard, interrupt)
		if err != nil {
			return 1, err
		}
		for i, b := range builds {
			printSize(rs[i], b)
			results[i] = append(results[i], rs[i])
		}
	}
	var io *ioResult
	if o.ioRounds > 0 && o.ioRecords > 0 {
		io, err = measureIO(dir, o.ioRecords, o.ioRounds)
		if err != nil {
			return 1, err
		}
	}
	var missed bool
	if o.compareLive {
		crashes, err := measureCrashes(o, builds[0], dir, interrupt)
		if err != nil {
			return 1, err
		}
		accepts, err := measureAcceptSides(o, builds[0], dir, interrupt)
		if err != nil {
			return 1, err
		}
		missed = reportLive(results[0], results[1], crashes)
		missed = reportAcceptSides(accepts, o.crashRow.players) || missed
	} else if len(builds) > 1 {
		missed = reportComparison(builds, results, io)
	} else {
		missed = report(results[0], io)
	}
	fmt.Printf("\ntotal time %v; load average at the end: %s\n", time.Since(began).Round(time.Second), procwatch.LoadAvg())
	if missed && o.failMiss {
		return 3, nil
	}
	return 0, nil
}

// raiseNoFile raises the soft limit of open files to the hard one; the
// supervisor and its workers inherit it.
func raiseNoFile() (soft, hard uint64, err error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0, err
	}
	soft = lim.Cur
	lim.Cur = lim.Max
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0, fmt.Errorf("raising RLIMIT_NOFILE: %w", err)
	}
	return soft, lim.Max, nil
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// measureRows measures one size for each build: o.rounds sessions each,
// the builds alternated. It returns one result per build; err is an
// interrupt.
func measureRows(o options, builds []*build, dir string, sz size, fdLimit uint64, interrupt <-chan struct{}) ([]*sizeResult, error) {
	rs := make([]*sizeResult, len(builds))
	for i := range builds {
		rs[i] = &sizeResult{players: sz.players, conns: sz.conns}
		if sz.conns+64 > int(fdLimit) {
			rs[i].skipped = fmt.Sprintf("needs %d fds, RLIMIT_NOFILE is %d", sz.conns+64, fdLimit)
		}
	}
	for range o.rounds {
		for i, b := range builds {
			select {
			case <-interrupt:
				return rs, errors.New("interrupted")
			default:
			}
			if r := rs[i]; r.skipped == "" && r.err == nil {
				r.err = measureSize(o, b, dir, r, interrupt)
			}
		}
	}
	return rs, nil
}

var (
	coldRe    = regexp.MustCompile(`gameserver\[(\d+)\]: (?:restored \S+(?: snapshot)? from \S+ ago: (\d+) players|no snapshot at)`)
	savedRe   = regexp.MustCompile(`gameserver\[(\d+)\]: handover: saved (\d+) players and (\d+) sessions in (\S+), stored (\d+) connections; total (\S+)(?: \(after (\S+) stopping)?`)
	restoreRe = regexp.MustCompile(`gameserver\[(\d+)\]: handover: restored (\d+) players and (\d+) connections in (\S+) (?:\(snapshot (\S+), sessions ([^;]+);)?`)
)

// measureSize runs one session of one size: seed, start, connect, load,
// upgrade; it adds its figures to r.
func measureSize(o options, b *build, dir string, r *sizeResult, interrupt <-chan struct{}) (err error) {
	bins := b.Bins
	sub, err := os.MkdirTemp(dir, fmt.Sprintf("p%d-c%d-", r.players, r.conns))
	if err != nil {
		return err
	}
	defer os.RemoveAll(sub)
	snap, worker := filepath.Join(sub, "snap"), filepath.Join(sub, "gameserver")
	if o.seed == "snapshot" {
		t0 := time.Now()
		if _, err := writeSeed(snap, r.players); err != nil {
			return fmt.Errorf("seeding: %w", err)
		}
		r.seedMS = ms(time.Since(t0))
	}
	if err := copyFile(worker, bins.gameA); err != nil {
		return err
	}
	workerArgs := []string{"--autosave", "0"}
	if bins.live {
		workerArgs = append(workerArgs, liveArgs(r.players)...)
	}
	s, err := startSupervisor(bins.supervisor, worker, snap, o.wait, nil, workerArgs...)
	if err != nil {
		return err
	}
	s.live = bins.live
	defer func() {
		s.stop()
		if o.logFile != "" {
			s.save(o.logFile, b.Label(fmt.Sprintf("players %d, connections %d", r.players, r.conns)))
		}
	}()
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\nthe supervisor's last lines:\n%s", err, s.tail(25))
		}
	}()
	l, err := s.find(`"listening"`, func(l logLine) bool { return l.Msg() == "listening" })
	if err != nil {
		return err
	}
	addr := l.Str("addr")
	m, err := s.findRe(coldRe)
	if err != nil {
		return err
	}
	ready, err := s.findMsg("generation ready")
	if err != nil {
		return err
	}
	r.coldMS = append(r.coldMS, num(ready, "ready_ms"))
	if o.seed == "login" {
		t0 := time.Now()
		if err := seedByLogin(addr, r.players, o.wait); err != nil {
			return err
		}
		r.seedMS = ms(time.Since(t0))
	} else if m[2] != strconv.Itoa(r.players) {
		return fmt.Errorf("the game restored %q, want %d players", m[0], r.players)
	}
	if o.compareLive && o.burst > 0 {
		seq, _, err := acceptBurst(addr, o.burst/4, 1, r.players, o.wait)
		if err != nil {
			return fmt.Errorf("the accept burst: %w", err)
		}
		us, rate, err := acceptBurst(addr, o.burst, burstAtOnce, r.players, o.wait)
		if err != nil {
			return fmt.Errorf("the accept burst: %w", err)
		}
		r.acceptSeqUS = append(r.acceptSeqUS, seq)
		r.acceptUS, r.acceptRate = append(r.acceptUS, us), append(r.acceptRate, rate)
	}

	clients, err := dialAll(addr, r.conns, r.players, o.seed == "snapshot", o.wait)
	if err != nil {
		return err
	}
	ld := startLoad(clients, 0, o.wait)
	defer ld.halt()
	steady := func() error { // every client has had 5 more replies
		mark := ld.replies()
		t0 := time.Now()
		err := ld.waitAll("answered", o.wait, func(i int, c *client) bool {
			return c.replies.Load() >= mark[i]+5
		})
		if err == nil {
			var iv []float64
			for i, c := range ld.clients {
				iv = append(iv, ms(time.Since(t0))/float64(c.replies.Load()-mark[i]))
			}
			r.intervals = append(r.intervals, median(iv))
		}
		return err
	}
	if err := steady(); err != nil {
		return err
	}
	bin := []string{bins.gameA, bins.gameB}
	before := len(r.supBlackout) // of earlier sessions
	for u := 1; u <= o.upgrades; u++ {
		select {
		case <-interrupt:
			return errors.New("interrupted")
		default:
		}
		r.upgrades++
		mark := s.at
		if err := upgradeOnce(s, ld, bin[u%2], len(r.supBlackout)-before, r, o.trace); err != nil {
			return err
		}
		if o.compareLive {
			noteLiveLines(s, mark, r)
		}
		if err := steady(); err != nil {
			return err
		}
	}
	for _, c := range ld.clients {
		r.notices += int(c.notices.Load())
	}
	return ld.firstErr()
}

// upgradeOnce installs bin, sends SIGHUP and collects the upgrade's figures;
// done is the number of successful upgrades before this one in this
// session.
func upgradeOnce(s *supervisor, ld *load, bin string, done int, r *sizeResult, trace bool) error {
	mark := s.at
	if err := copyFile(s.worker, bin); err != nil {
		return err
	}
	if err := s.Signal(unix.SIGHUP); err != nil {
		return err
	}
	st, err := s.findMsg("upgrade started")
	if err != nil {
		return err
	}
	gen := int(num(st, "gen"))
	from := s.at
	end, err := s.find(fmt.Sprintf("the outcome of gen %d", gen), func(l logLine) bool {
		return (l.Msg() == "upgrade succeeded" || l.Msg() == "upgrade failed") && int(num(l, "gen")) == gen
	})
	if err != nil {
		return err
	}
	if end.Msg() == "upgrade failed" {
		reason := end.Str("reason")
		r.failed = append(r.failed, reason)
		return fmt.Errorf("upgrade to gen %d failed: %s", gen, reason)
	}
	endAt := s.at
	defer func() { s.at = endAt }() // past the outcome, whatever the searches below found
	if trace {
		s.printLines(mark, endAt)
	}
	r.supBlackout = append(r.supBlackout, num(end, "blackout_ms"))
	r.moved = append(r.moved, int(num(end, "connections")))
	// The lines between the start and the outcome.
	s.at = from
	if saved, err := s.findMsg("handover: snapshot saved"); err == nil {
		r.saveMS = append(r.saveMS, num(saved, "save_ms"))
	}
	s.at = from
	if m, err := s.findRe(savedRe); err == nil {
		r.gameSave = append(r.gameSave, durMS(m[4]))
		r.gameStore = append(r.gameStore, durMS(m[6])-durMS(m[4]))
		if m[7] != "" {
			r.gameStop = append(r.gameStop, durMS(m[7]))
		}
	}
	s.at = from
	if !s.live { // --live logs no snapshot restore: noteLiveLines reads its own
		if m, err := s.findRe(restoreRe); err == nil {
			r.gameRestore = append(r.gameRestore, durMS(m[4]))
			if m[5] != "" {
				r.gameSnap = append(r.gameSnap, durMS(m[5]))
				r.gameResume = append(r.gameResume, durMS(m[6]))
			}
		}
	}
	// Every client must reach the new worker.
	if err := ld.waitAll("moved to the new worker", s.wait, func(_ int, c *client) bool {
		return c.switches.Load() > int64(done)
	}); err != nil {
		return err
	}
	var gaps []float64
	for _, c := range ld.clients {
		if g, ok := c.gap(done); ok {
			gaps = append(gaps, g)
		}
	}
	r.cliMedian = append(r.cliMedian, median(gaps))
	r.cliMax = append(r.cliMax, slices.Max(gaps))
	return nil
}

// durMS parses a Go duration as the game logs it.
func durMS(s string) float64 {
	d, err := time.ParseDuration(s)
	if err != nil {
		return -1
	}
	return ms(d)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
