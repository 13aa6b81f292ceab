package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/procswitch/supervisor/test/procwatch"
)

// --compare-live: the game with --live (its data mirrored in a
// shared-memory region, every connection stored in the supervisor's live
// fd store as it is accepted) against the snapshot file, on one build: each
// size's sessions alternate the two (measureRows, a "build" each), so that
// the machine's noise hits both. Then crash sessions, --live only: kill -9
// of the worker, and each client's time from the kill to its first reply
// from the restarted worker. Without --live a crash ends every connection:
// there is nothing to time. Each handover session also times a burst of new
// connections before its clients connect: the accept cost with the live fd
// store and without.

// Targets from issue 11.
const (
	targetLiveRatio   = 0.05  // live / file, client blackout, at 1M players / 10k connections
	targetGrowthMS    = 2.0   // live blackout, 1M players less 1k players, same connections
	targetCrashMS     = 100.0 // kill -9 to the first reply of the restarted worker, 100k / 1k
	targetAcceptRatio = 1.1   // accept cost, live / file
	growthFrom        = 1_000
	growthTo          = 1_000_000
	burstAtOnce       = 64 // connections of the accept burst dialled at once
	settleAfterKill   = 200 * time.Millisecond
)

var (
	liveResumeRe = regexp.MustCompile(`gameserver\[(\d+)\]: live (handover|restart): (\d+) players and (\d+) sessions resumed from the stored region \(generation (\d+)\) in (\S+)(?: \(the region taken over in ([^,)]+)[^)]*\))?;`)
	noticeMark   = []byte("NOTICE ")
)

// liveArgs are the game's flags for --live with room for players.
func liveArgs(players int) []string {
	return []string{"--live", "--live-players", strconv.Itoa(players)}
}

// noteLiveLines adds an upgrade's pass_ms, and with --live the game's
// resume time (as its restore), from the lines after mark that are already
// read: it does not wait.
func noteLiveLines(s *supervisor, mark int, r *sizeResult) {
	var pass, resume bool
	for _, l := range s.Log.All()[mark:] {
		if !pass && l.Msg() == "handover: connections passed, GO sent" {
			r.passMS, pass = append(r.passMS, num(l, "pass_ms")), true
		}
		if m := liveResumeRe.FindStringSubmatch(l.Raw); !resume && m != nil && m[2] == "handover" {
			r.gameRestore, resume = append(r.gameRestore, durMS(m[6])), true
			if m[7] != "" {
				r.liveTakeover = append(r.liveTakeover, durMS(m[7]))
			}
		}
	}
}

// acceptBurst dials n new connections, atOnce at a time, each logging
// in as a seeded player, and closes them once all are in. It returns the
// median time from dial to LOGIN's reply, µs, and the connections per
// second over the burst.
func acceptBurst(addr string, n, atOnce, players int, bound time.Duration) (us, rate float64, err error) {
	took := make([]float64, n)
	conns := make([]*client, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, atOnce)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d0 := time.Now()
			c, err := dialClient(addr, (i*7919)%players, true, bound)
			if err != nil {
				errs <- err
				return
			}
			took[i], conns[i] = float64(time.Since(d0))/float64(time.Microsecond), c
		}()
	}
	wg.Wait()
	wall := time.Since(t0)
	for _, c := range conns {
		if c != nil {
			c.conn.Close()
		}
	}
	close(errs)
	if err := <-errs; err != nil {
		return 0, 0, err
	}
	return median(took), float64(n) / wall.Seconds(), nil
}

// crashResult is what the crash sessions of one restart delay measured.
type crashResult struct {
	players, conns int
	restartMin     time.Duration // the supervisor's --restart-min and --restart-max
	standby        bool          // the supervisor's --standby: the kill promotes the standby
	kills          int           // attempted
	reply          []float64     // per kill: median over the clients of kill to first reply from the new worker, ms
	replyMax       []float64     // per kill: max over the clients
	notice         []float64     // per kill: median over the clients of kill to the NOTICE line, ms
	exited         []float64     // per kill: kill to the supervisor's "worker exited" line read, ms
	delay          []float64     // per kill: the supervisor's delay_ms
	resumeLine     []float64     // per kill: kill to the game's "live restart" line read, ms
	resume         []float64     // per kill: the game's own resume time, ms
	notices        map[string]int
	err            error
}

// measureCrashes runs o.rounds crash sessions per restart delay, the
// delays alternated.
func measureCrashes(o options, b *build, dir string, interrupt <-chan struct{}) ([]*crashResult, error) {
	if o.kills == 0 {
		return nil, nil
	}
	var out []*crashResult
	for _, d := range o.restartMins {
		for _, standby := range []bool{false, true} {
			if standby && !o.crashStandby {
				continue
			}
			out = append(out, &crashResult{players: o.crashRow.players, conns: o.crashRow.conns, restartMin: d, standby: standby,
				notices: map[string]int{}})
		}
	}
	for range o.rounds {
		for _, cr := range out {
			select {
			case <-interrupt:
				return out, errors.New("interrupted")
			default:
			}
			if cr.err == nil {
				cr.err = measureCrash(o, b, dir, cr, interrupt)
			}
		}
		for _, cr := range out {
			printCrash(cr)
		}
	}
	return out, nil
}

// measureCrash runs one crash session: seed, start with --live, connect
// the clients (idle), then o.kills times: kill -9 the worker, every client
// sends STATUS at once and waits for the reply of a new worker.
func measureCrash(o options, b *build, dir string, cr *crashResult, interrupt <-chan struct{}) (err error) {
	sub, err := os.MkdirTemp(dir, fmt.Sprintf("crash-p%d-c%d-", cr.players, cr.conns))
	if err != nil {
		return err
	}
	defer os.RemoveAll(sub)
	snap, worker := filepath.Join(sub, "snap"), filepath.Join(sub, "gameserver")
	if _, err := writeSeed(snap, cr.players); err != nil {
		return fmt.Errorf("seeding: %w", err)
	}
	if err := copyFile(worker, b.Bins.gameA); err != nil {
		return err
	}
	d := cr.restartMin.String()
	flags := []string{"--restart-min", d, "--restart-max", d}
	if cr.standby {
		flags = append(flags, "--standby")
	}
	s, err := startSupervisor(b.Bins.supervisor, worker, snap, o.wait, flags,
		append([]string{"--autosave", "0"}, liveArgs(cr.players)...)...)
	if err != nil {
		return err
	}
	defer func() {
		s.stop()
		if o.logFile != "" {
			s.save(o.logFile, fmt.Sprintf("crash: players %d, connections %d, %s", cr.players, cr.conns, cr.name()))
		}
	}()
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\nthe supervisor's last lines:\n%s", err, s.tail(25))
		}
	}()
	l, err := s.findMsg("listening")
	if err != nil {
		return err
	}
	cold, err := s.findRe(coldRe)
	if err != nil {
		return err
	}
	pid, _ := strconv.Atoi(cold[1])
	if _, err := s.findMsg("generation ready"); err != nil {
		return err
	}
	clients, err := dialAll(l.Str("addr"), cr.conns, cr.players, true, o.wait)
	if err != nil {
		return err
	}
	defer func() {
		for _, c := range clients {
			c.conn.Close()
		}
	}()
	if cr.standby {
		if _, err := s.findMsg("standby waiting"); err != nil {
			return err
		}
	}
	for range o.kills {
		select {
		case <-interrupt:
			return errors.New("interrupted")
		default:
		}
		cr.kills++
		if pid, err = killOnce(s, clients, pid, cr, o.wait); err != nil {
			return err
		}
		time.Sleep(settleAfterKill)
	}
	return nil
}

// killOnce kills the worker pid, has every client send STATUS and wait for
// its reply from the restarted worker, and returns that worker's PID.
func killOnce(s *supervisor, clients []*client, pid int, cr *crashResult, bound time.Duration) (int, error) {
	type seen struct {
		notice, reply time.Duration
		text          string
		pid           int
		err           error
	}
	got := make([]seen, len(clients))
	start := make(chan struct{})
	var wg sync.WaitGroup
	var t0 time.Time
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			g := &got[i]
			c.conn.SetDeadline(time.Now().Add(bound))
			if _, g.err = c.conn.Write(status); g.err != nil {
				return
			}
			for {
				line, err := c.r.ReadSlice('\n')
				at := time.Since(t0)
				if err != nil {
					g.err = err
					return
				}
				if bytes.HasPrefix(line, noticeMark) {
					g.notice, g.text = at, string(bytes.TrimSpace(line))
					continue
				}
				if g.pid, g.err = replyPID(line); g.err != nil || g.pid != pid {
					g.reply = at
					return
				}
			}
		}()
	}
	mark := s.at
	t0 = time.Now()
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		close(start)
		wg.Wait()
		return 0, fmt.Errorf("kill -9 %d: %w", pid, err)
	}
	close(start)
	wg.Wait()
	var reply, notice []float64
	newPID := 0
	for i, g := range got {
		switch {
		case g.err != nil:
			return 0, fmt.Errorf("client %d after kill -9 of %d: %w", i, pid, g.err)
		case newPID != 0 && g.pid != newPID:
			return 0, fmt.Errorf("client %d: a reply from pid %d, others from %d", i, g.pid, newPID)
		}
		newPID = g.pid
		reply = append(reply, ms(g.reply))
		if g.text != "" {
			notice = append(notice, ms(g.notice))
		}
		cr.notices[g.text]++
	}
	cr.reply, cr.replyMax = append(cr.reply, median(reply)), append(cr.replyMax, slices.Max(reply))
	cr.notice = append(cr.notice, median(notice))
	// The supervisor's and the game's lines, read by now.
	exited, err := s.find("worker exited", func(l logLine) bool { return l.Msg() == "worker exited" && int(num(l, "pid")) == pid })
	if err != nil {
		return 0, err
	}
	cr.exited = append(cr.exited, ms(exited.At.Sub(t0)))
	if cr.standby {
		promoted, err := s.findMsg("standby promoted: it takes the crashed worker's place")
		if err != nil {
			return 0, err
		}
		if int(num(promoted, "pid")) != newPID {
			return 0, fmt.Errorf("standby %v promoted, but pid %d answered", num(promoted, "pid"), newPID)
		}
		cr.delay = append(cr.delay, 0)
	} else {
		restarting, err := s.findMsg("worker restarting")
		if err != nil {
			return 0, err
		}
		cr.delay = append(cr.delay, num(restarting, "delay_ms"))
	}
	s.at = mark
	m, err := s.findRe(liveResumeRe)
	if err != nil {
		return 0, err
	}
	if m[2] != "restart" || m[1] != strconv.Itoa(newPID) {
		return 0, fmt.Errorf("after kill -9 of %d: %q, want a live restart of pid %d", pid, m[0], newPID)
	}
	cr.resumeLine = append(cr.resumeLine, ms(s.Log.All()[s.at-1].At.Sub(t0)))
	cr.resume = append(cr.resume, durMS(m[6]))
	if cr.standby { // the next kill is a lone crash too: a standby waits again
		if _, err := s.find(`a new "standby waiting"`, func(l logLine) bool {
			return l.Msg() == "standby waiting" && l.At.After(t0)
		}); err != nil {
			return 0, err
		}
	}
	return newPID, nil
}

// name is the crash sessions' flags.
func (cr *crashResult) name() string {
	if cr.standby {
		return fmt.Sprintf("--restart-min %v --standby", cr.restartMin)
	}
	return fmt.Sprintf("--restart-min %v", cr.restartMin)
}

func printCrash(cr *crashResult) {
	head := fmt.Sprintf("crash, live, players %7d, connections %5d, %s:", cr.players, cr.conns, cr.name())
	fmt.Printf("%s (load %s) %d/%d kills answered; ms from kill -9: first reply (median over clients) %s, max %s; NOTICE %s; "+
		"supervisor saw the exit %s, restart delay_ms %s; game's \"live restart\" line read %s, its resume %s\n",
		head, procwatch.LoadAvg(), len(cr.reply), cr.kills, list(cr.reply), list(cr.replyMax), list(cr.notice),
		list(cr.exited), list(cr.delay), list(cr.resumeLine), list(cr.resume))
	if cr.err != nil {
		fmt.Printf("  stopped early: %v\n", cr.err)
	}
}

// reportLive prints the --compare-live summary and the targets; it says
// whether a target was missed.
func reportLive(live, file []*sizeResult, crashes []*crashResult) (missed bool) {
	fmt.Println("\nHandover blackout, --live against the snapshot file: one build, sessions alternated; medians over all the upgrades, ms;")
	fmt.Println("ratio = live / file.")
	fmt.Println("  supervisor = blackout_ms (old worker told to save -> new worker READY=1); client med = per upgrade, the median over")
	fmt.Println("      the connections of the time from the old worker's last reply to the new one's first; client max = per upgrade, the")
	fmt.Println("      worst connection's; restore = the game's own: live, resuming from the region; file, reading the snapshot and")
	fmt.Println("      resuming the sessions; (takeover) = of the live restore, taking the region over; pass_ms = the supervisor")
	fmt.Println("      passing the stored connections to the new worker")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "players\tconns\tok live\tok file\tsupervisor live\tfile\tratio\tclient med live\tfile\tratio\tclient max live\tfile\trestore live\t(takeover)\tfile\tpass_ms live\tfile\t")
	for i, l := range live {
		f := file[i]
		if why := unmeasuredLive(l, f); why != "" {
			fmt.Fprintf(tw, "%d\t%d\t-\t%s\t\n", l.players, l.conns, oneLine(why))
			continue
		}
		fmt.Fprintf(tw, "%d\t%d\t%d/%d\t%d/%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", l.players, l.conns,
			len(l.supBlackout), l.upgrades, len(f.supBlackout), f.upgrades,
			side(l.supBlackout, f.supBlackout), side(l.cliMedian, f.cliMedian), f1(l.cliMax), f1(f.cliMax),
			f1(l.gameRestore), f1(l.liveTakeover), f1(f.gameRestore), f1(l.passMS), f1(f.passMS))
	}
	tw.Flush()
	for _, rs := range [][]*sizeResult{live, file} {
		for _, r := range rs {
			if r.err != nil && len(r.supBlackout) > 0 {
				fmt.Printf("  players %d, connections %d stopped early: %s\n", r.players, r.conns, oneLine(r.err.Error()))
			}
		}
	}

	fmt.Println("\nAccept cost, per session before its clients connect: new connections, each dialled and logged in, one at a time")
	fmt.Printf("(a quarter of --accept-burst), then a burst, %d at a time; per session the median over its connections of dial to\n", burstAtOnce)
	fmt.Println("LOGIN's reply (µs), and the burst's connections per second; medians over the sessions")
	tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "players\tconns\tone at a time µs live\tfile\tratio\tburst µs live\tfile\tratio\tburst conns/s live\tfile\t")
	var usLive, usFile, seqLive, seqFile []float64
	for i, l := range live {
		f := file[i]
		usLive, usFile = append(usLive, l.acceptUS...), append(usFile, f.acceptUS...)
		seqLive, seqFile = append(seqLive, l.acceptSeqUS...), append(seqFile, f.acceptSeqUS...)
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t\n", l.players, l.conns, side(l.acceptSeqUS, f.acceptSeqUS), side(l.acceptUS, f.acceptUS),
			f0(l.acceptRate), f0(f.acceptRate))
	}
	fmt.Fprintf(tw, "all\t\t%s\t%s\t\t\t\n", side(seqLive, seqFile), side(usLive, usFile))
	tw.Flush()
	for _, l := range live {
		if l.notices > 0 {
			fmt.Printf("  live, players %d, connections %d: the clients saw %d NOTICE lines in handovers (no crash)\n", l.players, l.conns, l.notices)
		}
	}

	if len(crashes) > 0 {
		fmt.Println("\nCrash, --live only (without it a kill -9 of the worker ends every connection): kill -9 of the worker's PID, then")
		fmt.Println("every idle client sends STATUS; ms from the kill to its first reply from the restarted worker, median over the")
		fmt.Println("clients per kill, then the median (max) over the kills; the pieces, medians over the kills: the supervisor's")
		fmt.Println("\"worker exited\" read, its restart delay (--restart-min = --restart-max), the game's \"live restart\" line read, its resume")
		tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "players\tconns\tsupervisor\tkills ok\tfirst reply\tworst client\tNOTICE\texit seen\tdelay_ms\trestart line\tgame resume\t")
		for _, cr := range crashes {
			fmt.Fprintf(tw, "%d\t%d\t%v\t%d/%d\t%s (%s)\t%s\t%s\t%s\t%s\t%s\t%s\t\n", cr.players, cr.conns, cr.name(), len(cr.reply), cr.kills,
				f1(cr.reply), fmax(cr.reply), f1(cr.replyMax), f1(cr.notice), f1(cr.exited), f1(cr.delay), f1(cr.resumeLine), f1(cr.resume))
		}
		tw.Flush()
		for _, cr := range crashes {
			fmt.Printf("  %s: notices %v\n", cr.name(), cr.notices)
			if cr.err != nil {
				fmt.Printf("  %s stopped early: %s\n", cr.name(), oneLine(cr.err.Error()))
			}
		}
	}

	fmt.Println("\nTargets (issue 11):")
	return liveTargets(live, file, crashes, [2][]float64{seqLive, seqFile}, [2][]float64{usLive, usFile})
}

func liveTargets(live, file []*sizeResult, crashes []*crashResult, seq, burst [2][]float64) (missed bool) {
	verdict := func(ok bool) string {
		if ok {
			return "PASS"
		}
		missed = true
		return "MISS"
	}
	row := func(rs []*sizeResult, players, conns int) *sizeResult {
		for _, r := range rs {
			if r.players == players && r.conns == conns && len(r.cliMedian) > 0 {
				return r
			}
		}
		return nil
	}
	for _, sz := range []size{{1_000_000, 10_000}, {100_000, 1_000}} {
		l, f := row(live, sz.players, sz.conns), row(file, sz.players, sz.conns)
		name := fmt.Sprintf("%s players, %s connections", short(sz.players), short(sz.conns))
		if l == nil || f == nil {
			fmt.Printf("  ---- %s: live / file: not measured\n", name)
			continue
		}
		cl, cf, sl, sf := median(l.cliMedian), median(f.cliMedian), median(l.supBlackout), median(f.supBlackout)
		v := "    "
		if sz.players == 1_000_000 { // the target's size; the other, for scale
			v = verdict(cl <= targetLiveRatio*cf)
		}
		fmt.Printf("  %s %s: client blackout live / file: %.1f / %.1f ms = %.3f (target <= %.2f, %.1f ms here)\n",
			v, name, cl, cf, cl/cf, targetLiveRatio, targetLiveRatio*cf)
		fmt.Printf("       supervisor blackout live / file: %.1f / %.1f ms = %.3f\n", sl, sf, sl/sf)
		// In a closed loop every client has a command queued when the new
		// worker starts: the last is answered no sooner than the time the
		// server takes to answer each client once, which is the steady
		// time between a client's replies.
		il, ifl := median(l.intervals), median(f.intervals)
		fmt.Printf("       the clients' steady time between replies, no handover (the closed loop's floor), live / file: %.1f / %.1f ms;\n", il, ifl)
		fmt.Printf("       client blackout over it: live %.1f, file %.1f\n", cl/il, cf/ifl)
	}
	grew := false
	for _, lo := range live {
		hi := row(live, growthTo, lo.conns)
		if lo.players != growthFrom || len(lo.cliMedian) == 0 || hi == nil {
			continue
		}
		grew = true
		dc, ds := median(hi.cliMedian)-median(lo.cliMedian), median(hi.supBlackout)-median(lo.supBlackout)
		fmt.Printf("  %s live blackout from 1k to 1M players at %s connections: clients %.1f -> %.1f ms, %+.1f ms (target <= +%.0f ms)\n",
			verdict(dc <= targetGrowthMS), short(lo.conns), median(lo.cliMedian), median(hi.cliMedian), dc, targetGrowthMS)
		fmt.Printf("  %s     the same, supervisor: %.1f -> %.1f ms, %+.1f ms\n",
			verdict(ds <= targetGrowthMS), median(lo.supBlackout), median(hi.supBlackout), ds)
	}
	if !grew {
		fmt.Println("  ---- live blackout from 1k to 1M players at the same connections: not measured")
	}
	for _, cr := range crashes {
		if len(cr.reply) == 0 {
			fmt.Printf("  ---- crash to first reply, %s: not measured\n", cr.name())
			continue
		}
		c := median(cr.reply)
		fmt.Printf("  %s crash (kill -9) to the first reply of the restarted worker, %s players, %s connections, supervisor %s: %.1f ms (target <= %.0f ms)\n",
			verdict(c <= targetCrashMS), short(cr.players), short(cr.conns), cr.name(), c, targetCrashMS)
	}
	for _, a := range []struct {
		name string
		v    [2][]float64
	}{{"one at a time", seq}, {fmt.Sprintf("in a burst, %d at a time", burstAtOnce), burst}} {
		if len(a.v[0]) == 0 || len(a.v[1]) == 0 {
			fmt.Printf("  ---- accept cost %s: not measured\n", a.name)
			continue
		}
		// For information: the target is the store's own cost (accept.go),
		// which this ratio includes along with the region's.
		r := median(a.v[0]) / median(a.v[1])
		fmt.Printf("       accept cost live / file, %s (dial to LOGIN's reply): %.0f / %.0f µs = %.2f (the store's own cost, below, is the target)\n",
			a.name, median(a.v[0]), median(a.v[1]), r)
	}
	return missed
}

// unmeasuredLive says why a size has no figures for live or file, "" when
// both have.
func unmeasuredLive(l, f *sizeResult) string {
	for _, r := range []struct {
		tag string
		r   *sizeResult
	}{{"live", l}, {"file", f}} {
		switch {
		case r.r.skipped != "":
			return r.r.skipped
		case len(r.r.supBlackout) == 0 && r.r.err != nil:
			return r.tag + " failed: " + r.r.err.Error()
		case len(r.r.supBlackout) == 0:
			return r.tag + ": not measured"
		}
	}
	return ""
}

func f0(v []float64) string {
	if len(v) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", median(v))
}

// short writes 1000000 as 1M and 1000 as 1k.
func short(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return strconv.Itoa(n/1_000_000) + "M"
	case n >= 1000 && n%1000 == 0:
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}
