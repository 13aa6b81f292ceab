package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/procswitch/supervisor/test/procwatch"
)

// Targets from issue 3.
const (
	targetPlayers    = 100_000
	targetConns      = 1_000
	targetBlackoutMS = 100.0
	bigPlayers       = 1_000_000
	targetSaveRestMS = 1000.0
)

// printSize prints one size's result of build b as soon as it is measured.
func printSize(r *sizeResult, b *build) {
	head := b.Label(fmt.Sprintf("players %7d, connections %5d:", r.players, r.conns))
	switch {
	case r.skipped != "":
		fmt.Printf("%s skipped: %s\n", head, r.skipped)
		return
	case len(r.supBlackout) == 0 && r.err != nil:
		fmt.Printf("%s FAILED: %v\n", head, r.err)
		return
	}
	fmt.Printf("%s (load %s) %d/%d upgrades ok; ms: blackout supervisor %s, clients median %s, clients max %s; save_ms %s; game stop %s, save %s, fd store %s, restore %s (snapshot %s, sessions %s)\n",
		head, procwatch.LoadAvg(), len(r.supBlackout), r.upgrades, list(r.supBlackout), list(r.cliMedian), list(r.cliMax), list(r.saveMS),
		list(r.gameStop), list(r.gameSave), list(r.gameStore), list(r.gameRestore), list(r.gameSnap), list(r.gameResume))
	if r.err != nil {
		fmt.Printf("  stopped early: %v\n", r.err)
	}
}

func list(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.0f", x)
	}
	return "[" + strings.Join(s, " ") + "]"
}

func f1(v []float64) string {
	if len(v) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", median(v))
}

func fmax(v []float64) string {
	if len(v) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", slices.Max(v))
}

// report prints the summary table and the targets; it says whether a
// target was missed.
func report(results []*sizeResult, io *ioResult) (missed bool) {
	fmt.Println("\nBlackout per size: medians over the upgrades (max in parentheses), in ms.")
	fmt.Println("  supervisor = blackout_ms of \"upgrade succeeded\" (old worker told to save -> new worker READY=1)")
	fmt.Println("  client med/max = per upgrade, the median/max over the connections of the time from the old worker's")
	fmt.Println("      last reply to the new worker's first; then the median (max) over the upgrades")
	fmt.Println("  interval = a connection's time between replies without upgrades (median over connections), for scale")
	fmt.Println("  save_ms = from the drain signal to the old worker's HANDOVER=saved, as the supervisor logs it; game save,")
	fmt.Println("      fd store, restore = the game's own log: writing the snapshot; storing the connections with the")
	fmt.Println("      supervisor (up to 253 a datagram) and HANDOVER=saved; restoring the snapshot with the sessions")
	fmt.Println("  cold start = ready_ms of the first worker, which restores the seeded players")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "players\tconns\tok\tcold start\tsupervisor\tclient med\tclient max\tinterval\tsave_ms\tgame save\tfd store\trestore\t")
	for _, r := range results {
		if r.skipped != "" || len(r.supBlackout) == 0 {
			why := r.skipped
			if why == "" && r.err != nil {
				why = "failed: " + r.err.Error()
			}
			fmt.Fprintf(tw, "%d\t%d\t-\t%s\t\n", r.players, r.conns, oneLine(why))
			continue
		}
		fmt.Fprintf(tw, "%d\t%d\t%d/%d\t%.0f\t%s (%s)\t%s (%s)\t%s (%s)\t%s\t%s\t%s\t%s\t%s\t\n",
			r.players, r.conns, len(r.supBlackout), r.upgrades, median(r.coldMS),
			f1(r.supBlackout), fmax(r.supBlackout), f1(r.cliMedian), fmax(r.cliMedian), f1(r.cliMax), fmax(r.cliMax),
			f1(r.intervals), f1(r.saveMS), f1(r.gameSave), f1(r.gameStore), f1(r.gameRestore))
	}
	tw.Flush()

	printIO(io)
	fmt.Println("\nTargets:")
	return printTargets(results, io)
}

// printIO prints the snapshot file's throughput, if measured.
func printIO(io *ioResult) {
	if io == nil {
		return
	}
	mb := float64(io.bytes) / 1e6
	fmt.Printf("\nSnapshot file through package state, %d player records (%.1f MB), medians of %d rounds:\n", io.records, mb, len(io.writeMS))
	w, r := median(io.writeMS), median(io.readMS)
	fmt.Printf("  write (create, records, commit with fsync and rename): %7.1f ms  %7.1f MB/s  %10.0f records/s\n", w, mb/(w/1000), float64(io.records)/(w/1000))
	fmt.Printf("  read, page cache warm (open verifies the checksum, then records): %7.1f ms  %7.1f MB/s  %10.0f records/s\n", r, mb/(r/1000), float64(io.records)/(r/1000))
	if len(io.readColdMS) > 0 {
		c := median(io.readColdMS)
		fmt.Printf("  read after dropping the page cache: %7.1f ms  %7.1f MB/s  %10.0f records/s\n", c, mb/(c/1000), float64(io.records)/(c/1000))
	}
	fmt.Printf("  write + read: %.1f ms\n", w+r)
}

// printTargets prints each target's PASS or MISS; it says whether a target
// was missed.
func printTargets(results []*sizeResult, io *ioResult) (missed bool) {
	check := func(name string, got float64, ok bool, limit float64, unit string) {
		verdict := "PASS"
		if !ok {
			verdict = "MISS"
			missed = true
		}
		fmt.Printf("  %-4s %s: %.1f %s (target <= %.0f %s)\n", verdict, name, got, unit, limit, unit)
	}
	found := false
	for _, r := range results {
		if r.players == targetPlayers && r.conns == targetConns && len(r.supBlackout) > 0 {
			found = true
			sb, cb := median(r.supBlackout), median(r.cliMedian)
			check("100k players, 1k connections: supervisor blackout, median", sb, sb <= targetBlackoutMS, targetBlackoutMS, "ms")
			check("100k players, 1k connections: client blackout, median", cb, cb <= targetBlackoutMS, targetBlackoutMS, "ms")
			fmt.Printf("       (maxima: supervisor %.1f ms; clients %.1f ms, median over upgrades of each upgrade's worst connection %.1f ms)\n",
				slices.Max(r.supBlackout), slices.Max(r.cliMax), median(r.cliMax))
		}
	}
	if !found {
		fmt.Println("  ---- 100k players, 1k connections: not measured")
	}
	var big *sizeResult
	for _, r := range results {
		if r.players == bigPlayers && len(r.gameSave) > 0 && len(r.gameRestore) > 0 && (big == nil || r.conns < big.conns) {
			big = r
		}
	}
	if big != nil {
		sr := median(big.gameSave) + median(big.gameRestore)
		check(fmt.Sprintf("save + restore of 1M players (game's log, %d connections)", big.conns), sr, sr <= targetSaveRestMS, targetSaveRestMS, "ms")
		fmt.Printf("       (save %.1f ms + restore %.1f ms; save with the fd store, as the supervisor sees it, %.1f ms)\n",
			median(big.gameSave), median(big.gameRestore), median(big.saveMS))
	} else {
		fmt.Println("  ---- save + restore of 1M players in the game: not measured")
	}
	if io != nil && io.records == bigPlayers {
		sr := median(io.writeMS) + median(io.readMS)
		check("write + read of 1M player records (package state alone)", sr, sr <= targetSaveRestMS, targetSaveRestMS, "ms")
	}
	return missed
}

func oneLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// reportComparison prints each size's blackout medians of both builds side
// by side, with the ratio new/baseline, then each build's targets; it says
// whether this tree's build missed a target.
func reportComparison(builds []*build, results [][]*sizeResult, io *ioResult) (missed bool) {
	fmt.Println("\nBlackout per size, both builds measured in this run, alternated: medians over all the upgrades, in ms;")
	fmt.Println("ratio = new / baseline (below 1: the new build is faster).")
	fmt.Printf("  new:      %s\n  baseline: %s\n", builds[0].Src, builds[1].Src)
	fmt.Println("  supervisor, client med, save+restore: as in the table without --baseline (supervisor, client med, game")
	fmt.Println("      save plus restore); each side's figure is the median over all its upgrades")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "players\tconns\tok new\tok base\tsupervisor new\tbase\tratio\tclient med new\tbase\tratio\tsave+restore new\tbase\tratio\t")
	for i, n := range results[0] {
		b := results[1][i]
		if why := unmeasured(n, b); why != "" {
			fmt.Fprintf(tw, "%d\t%d\t-\t%s\t\n", n.players, n.conns, oneLine(why))
			continue
		}
		fmt.Fprintf(tw, "%d\t%d\t%d/%d\t%d/%d\t%s\t%s\t%s\t\n", n.players, n.conns,
			len(n.supBlackout), n.upgrades, len(b.supBlackout), b.upgrades,
			side(n.supBlackout, b.supBlackout), side(n.cliMedian, b.cliMedian),
			side(sumMedians(n.gameSave, n.gameRestore), sumMedians(b.gameSave, b.gameRestore)))
	}
	tw.Flush()
	for i, b := range builds {
		for _, r := range results[i] {
			if r.err != nil && len(r.supBlackout) > 0 {
				fmt.Printf("  %s stopped early: %s\n", b.Label(fmt.Sprintf("players %d, connections %d:", r.players, r.conns)), oneLine(r.err.Error()))
			}
		}
	}

	printIO(io)
	fmt.Println("\nTargets, new:")
	missed = printTargets(results[0], io)
	fmt.Println("\nTargets, baseline:")
	printTargets(results[1], nil)
	return missed
}

// unmeasured says why a size has no figures for a build, "" when both have.
func unmeasured(n, b *sizeResult) string {
	for tag, r := range map[string]*sizeResult{"new": n, "baseline": b} {
		switch {
		case r.skipped != "":
			return r.skipped
		case len(r.supBlackout) == 0 && r.err != nil:
			return tag + " failed: " + r.err.Error()
		case len(r.supBlackout) == 0:
			return tag + ": not measured"
		}
	}
	return ""
}

// side is the medians of n and b and their ratio, as three cells.
func side(n, b []float64) string {
	if len(n) == 0 || len(b) == 0 {
		return f1(n) + "\t" + f1(b) + "\t-"
	}
	ratio := "-"
	if median(b) != 0 {
		ratio = fmt.Sprintf("%.2f", median(n)/median(b))
	}
	return f1(n) + "\t" + f1(b) + "\t" + ratio
}

// sumMedians is the sum of the medians of a and b, as a list of one; empty
// when either is.
func sumMedians(a, b []float64) []float64 {
	if len(a) == 0 || len(b) == 0 {
		return nil
	}
	return []float64{median(a) + median(b)}
}
