package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// table prints rows of cells in aligned columns; a row of no cells is a
// blank line.
type table struct {
	rows [][]string
}

func (t *table) row(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) print(w io.Writer) {
	var width []int
	for _, r := range t.rows {
		for i, c := range r {
			if i >= len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], len(c))
		}
	}
	for _, r := range t.rows {
		if len(r) == 0 {
			fmt.Fprintln(w)
			continue
		}
		var b strings.Builder
		for i, c := range r {
			if i < len(r)-1 {
				c += strings.Repeat(" ", width[i]-len(c)+3)
			}
			b.WriteString(c)
		}
		fmt.Fprintln(w, "  "+strings.TrimRight(b.String(), " "))
	}
}

func printUpgrades(w io.Writer, ms []modeResult, o map[string]any) {
	fmt.Fprintf(w, "1. UPGRADES UNDER LOAD: %v SIGHUPs per mode, one every %v; %v clients that never retry; a mix of /path queries\n",
		o["upgrades"], o["every"], o["clients"])
	fmt.Fprintf(w, "   \"after an upgrade\": requests under way within %v after a SIGHUP; \"steady\": all others (after %v of warm-up;\n", o["window"], o["warmup"])
	fmt.Fprintf(w, "   %v of steady load before the first SIGHUP and after the last window). Switch time: SIGHUP to the first\n", o["steady"])
	fmt.Fprintf(w, "   answer from a PID of the new generation (PIDs from the supervisor's \"upgrade succeeded\" line).\n")
	t := &table{}
	head := []string{""}
	for _, m := range ms {
		head = append(head, m.Mode)
	}
	t.row(append(head, "target")...)
	col := func(label, target string, f func(m modeResult) string) {
		r := []string{label}
		for _, m := range ms {
			r = append(r, f(m))
		}
		t.row(append(r, target)...)
	}
	col("run, ok req/s", "", func(m modeResult) string { return fmt.Sprintf("%.1f s, %.0f/s", m.Seconds, m.OKPerSecond) })
	col("requests", "", func(m modeResult) string { return fmt.Sprint(m.Requests) })
	col("failed", "0", func(m modeResult) string { return fmt.Sprint(m.Failed) })
	col("errors by class", "", func(m modeResult) string { return classes(m.ByClass) })
	col("steady: n, p50 / p99 / max", "", func(m modeResult) string { return lat(m.Steady) })
	col("after upgrade: n, p50 / p99 / max", "", func(m modeResult) string { return lat(m.AfterUpgrade) })
	col("p99 after upgrade / steady p99", fmt.Sprintf("<= %.1fx", targetP99Ratio), func(m modeResult) string { return fmt.Sprintf("%.2fx", m.P99Ratio) })
	col("switch time median / p90", fmt.Sprintf("median <= %.0f ms", targetSwitchMS), func(m modeResult) string {
		return fmt.Sprintf("%.1f / %.1f ms", m.SwitchMedianMS, m.SwitchP90MS)
	})
	col("supervisor ready_ms median", "", func(m modeResult) string { return fmt.Sprintf("%.1f ms", m.ReadyMedianMS) })
	col("new workers' CPU by then, median", "", func(m modeResult) string { return fmt.Sprintf("%.1f ms", m.WorkerCPUMedianMS) })
	col("switch - ready_ms, median", "", func(m modeResult) string { return fmt.Sprintf("%.1f ms", m.BeyondReadyMedianMS) })
	col("  SIGHUP to \"upgrade started\", median", "", func(m modeResult) string { return fmt.Sprintf("%.1f ms", m.SignalMedianMS) })
	col("  \"upgrade succeeded\" (drain) to new answer, median", "", func(m modeResult) string {
		return fmt.Sprintf("%.1f ms", m.DrainToNewMedianMS)
	})
	col("upgrades ok / new gen answered", "", func(m modeResult) string {
		return fmt.Sprintf("%d/%d, %d/%d", m.UpgradesOK, len(m.Upgrades), m.UpgradesOK-m.NoNewAnswer, m.UpgradesOK)
	})
	t.print(w)
	printUpgradeDetails(w, ms, "")
	fmt.Fprintln(w)
}

// printUpgradeDetails prints each upgrade's switch time, failed requests and
// phase errors, each line's mode prefixed with prefix.
func printUpgradeDetails(w io.Writer, ms []modeResult, prefix string) {
	for _, m := range ms {
		var sw []string
		for _, u := range m.Upgrades {
			switch {
			case !u.OK:
				sw = append(sw, "failed")
			case u.SwitchMS < 0:
				sw = append(sw, "none")
			default:
				sw = append(sw, fmt.Sprintf("%.0f", u.SwitchMS))
			}
		}
		fmt.Fprintf(w, "  %s%s switch times, ms: %s\n", prefix, m.Mode, strings.Join(sw, " "))
		for _, s := range m.ErrorSamples {
			fmt.Fprintf(w, "  %s%s error: %s\n", prefix, m.Mode, s)
		}
		if m.Error != "" {
			fmt.Fprintf(w, "  %s%s PHASE ERROR: %s\n", prefix, m.Mode, m.Error)
		}
	}
}

func lat(l latency) string {
	return fmt.Sprintf("%d, %.2f / %.2f / %.1f ms", l.Requests, l.P50MS, l.P99MS, l.MaxMS)
}

// classes lists the failure classes, "-" when there are none.
func classes(m map[string]int) string {
	var parts []string
	for c, n := range m {
		if c != "ok" && n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", c, n))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func printThroughput(w io.Writer, tp *throughputResult) {
	fmt.Fprintf(w, "2. THROUGHPUT: the same pathfind binary bare (--listen) and under the supervisor (no upgrades), alternated;\n")
	fmt.Fprintf(w, "   %d %s clients, the same query sequence for both targets of a round, %.1f s measured per target and round\n",
		tp.Clients, tp.Mode, tp.RoundSeconds)
	t := &table{}
	t.row("round", "target", "req/s", "p50", "p99", "failed", "other pid", "worker CPU/req", "supervisor CPU")
	for _, r := range tp.Rounds {
		supCPU := "-"
		if r.Target == "supervised" {
			supCPU = fmt.Sprintf("%.0f ms", r.SupervisorCPUMS)
		}
		t.row(fmt.Sprint(r.Round), r.Target, fmt.Sprintf("%.0f", r.PerSec), fmt.Sprintf("%.2f ms", r.P50MS),
			fmt.Sprintf("%.2f ms", r.P99MS), fmt.Sprint(r.Failed), fmt.Sprint(r.WrongPID),
			fmt.Sprintf("%.0f us", r.CPUPerReqUS), supCPU)
	}
	t.print(w)
	fmt.Fprintf(w, "  median req/s: bare %.0f, supervised %.0f; ratio supervised/bare %.3f (target >= %.2f)\n",
		tp.BareMedian, tp.SupervisedMedian, tp.Ratio, targetRatio)
	fmt.Fprintf(w, "  less noisy companions: median of the rounds' own ratios %.3f; worker CPU per request bare %.0f us,\n",
		tp.PairRatioMedian, tp.BareCPUPerReqUS)
	fmt.Fprintf(w, "  supervised %.0f us; the supervisor used %.0f ms of CPU over %.0f s of supervised load (/proc stat, 10 ms ticks)\n",
		tp.SupCPUPerReqUS, tp.SupervisorCPUMS, tp.SupervisedSeconds)
	if tp.Failed > 0 {
		fmt.Fprintf(w, "  failed requests: %d\n", tp.Failed)
	}
	if tp.Error != "" {
		fmt.Fprintf(w, "  PHASE ERROR: %s\n", tp.Error)
	}
	fmt.Fprintln(w)
}

func printFlatness(w io.Writer, f *flatResult) {
	fmt.Fprintf(w, "3. RESOURCE FLATNESS: %d upgrades back to back (SIGHUP, \"upgrade succeeded\", old \"generation drained\")\n", f.Asked)
	fmt.Fprintf(w, "   %d done, %d failed, in %.1f s (%.1f upgrades/s); supervisor ready_ms median %.1f ms\n",
		f.Done, f.Failed, f.Seconds, float64(f.Done)/max(f.Seconds, 1e-9), f.ReadyMS)
	t := &table{}
	t.row("supervisor", "before", "after 1st", "after all", "target")
	t.row("VmRSS", fmtMB(f.Before.RSSKB), fmtMB(f.AfterFirst.RSSKB), fmtMB(f.After.RSSKB), fmt.Sprintf("<= %.0f MB", targetRSSMB))
	t.row("VmHWM (peak)", fmtMB(f.Before.HWMKB), fmtMB(f.AfterFirst.HWMKB), fmtMB(f.After.HWMKB), "")
	t.row("open fds", fmt.Sprint(f.Before.FDs), fmt.Sprint(f.AfterFirst.FDs), fmt.Sprint(f.After.FDs), "flat")
	t.row("children (live)", fmt.Sprint(f.Before.Children), fmt.Sprint(f.AfterFirst.Children), fmt.Sprint(f.After.Children), "flat")
	t.row("zombie children", fmt.Sprint(f.Before.Zombies), fmt.Sprint(f.AfterFirst.Zombies), fmt.Sprint(f.After.Zombies), "0")
	t.row("threads", fmt.Sprint(f.Before.Threads), fmt.Sprint(f.AfterFirst.Threads), fmt.Sprint(f.After.Threads), "")
	t.print(w)
	fmt.Fprintf(w, "  max VmRSS sampled after each upgrade: %s\n", fmtMB(f.MaxRSSKB))
	var series []string
	for _, p := range f.RSSSeries {
		series = append(series, fmt.Sprintf("%d:%.1f", p.Upgrades, mb(p.RSSKB)))
	}
	fmt.Fprintf(w, "  VmRSS (MB) after N upgrades: %s\n", strings.Join(series, " "))
	for _, l := range f.Load {
		fmt.Fprintf(w, "  light load meanwhile, %d %s client(s): %d requests, %d failed (%s)\n",
			l.Clients, l.Mode, l.Requests, l.Failed, classes(l.ByClass))
		for _, s := range l.Samples {
			fmt.Fprintf(w, "    error: %s\n", s)
		}
	}
	if f.Error != "" {
		fmt.Fprintf(w, "  PHASE ERROR: %s\n", f.Error)
	}
	fmt.Fprintln(w)
}

func fmtMB(kb int) string { return fmt.Sprintf("%.1f MB", mb(kb)) }
