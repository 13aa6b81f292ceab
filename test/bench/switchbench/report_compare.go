package main

import (
	"fmt"
	"io"
	"strings"
)

// comparison is one figure of both builds, side by side.
type comparison struct {
	Phase    string  `json:"phase"`
	Figure   string  `json:"figure"`
	Unit     string  `json:"unit,omitempty"`
	New      float64 `json:"new"`
	Baseline float64 `json:"baseline"`
	Ratio    float64 `json:"ratio,omitempty"` // new / baseline; absent when the baseline's is 0
}

// Units of the figures compared; "" is a count.
const (
	unitMS    = "ms"
	unitUS    = "us"
	unitMB    = "MB"
	unitPerS  = "req/s"
	unitRatio = "x"
	unitRate  = "/s"
)

// comparer gathers the rows of one phase.
type comparer struct {
	phase string
	rows  []comparison
}

func (c *comparer) row(figure, unit string, n, b float64) {
	r := comparison{Phase: c.phase, Figure: figure, Unit: unit, New: n, Baseline: b}
	if b != 0 {
		r.Ratio = n / b
	}
	c.rows = append(c.rows, r)
}

// compare puts each figure of the two builds side by side.
func compare(n, b *results) []comparison {
	c := &comparer{}
	for i := 0; i < len(n.Upgrades) && i < len(b.Upgrades); i++ {
		compareUpgrades(c, &n.Upgrades[i], &b.Upgrades[i])
	}
	if n.Throughput != nil && b.Throughput != nil {
		compareThroughput(c, n.Throughput, b.Throughput)
	}
	if n.Flatness != nil && b.Flatness != nil {
		compareFlatness(c, n.Flatness, b.Flatness)
	}
	return c.rows
}

func compareUpgrades(c *comparer, n, b *modeResult) {
	c.phase = "upgrades under load, " + n.Mode
	c.row("requests", "", float64(n.Requests), float64(b.Requests))
	c.row("failed requests", "", float64(n.Failed), float64(b.Failed))
	c.row("ok requests per second", unitPerS, n.OKPerSecond, b.OKPerSecond)
	c.row("switch time, median", unitMS, n.SwitchMedianMS, b.SwitchMedianMS)
	c.row("switch time, p90", unitMS, n.SwitchP90MS, b.SwitchP90MS)
	c.row("  start to READY=1 (ready_ms), median", unitMS, n.ReadyMedianMS, b.ReadyMedianMS)
	c.row("  new workers' CPU by then, median", unitMS, n.WorkerCPUMedianMS, b.WorkerCPUMedianMS)
	c.row("  SIGHUP to \"upgrade started\", median", unitMS, n.SignalMedianMS, b.SignalMedianMS)
	c.row("  \"upgrade succeeded\" to new answer, median", unitMS, n.DrainToNewMedianMS, b.DrainToNewMedianMS)
	c.row("upgrades answered by the new generation", "", float64(n.UpgradesOK-n.NoNewAnswer), float64(b.UpgradesOK-b.NoNewAnswer))
	c.row("steady p50", unitMS, n.Steady.P50MS, b.Steady.P50MS)
	c.row("steady p99", unitMS, n.Steady.P99MS, b.Steady.P99MS)
	c.row("after an upgrade p99", unitMS, n.AfterUpgrade.P99MS, b.AfterUpgrade.P99MS)
	c.row("p99 after an upgrade / steady p99", unitRatio, n.P99Ratio, b.P99Ratio)
}

func compareThroughput(c *comparer, n, b *throughputResult) {
	c.phase = "throughput"
	c.row("supervised / bare, medians of the rounds", unitRatio, n.Ratio, b.Ratio)
	c.row("median of the rounds' own ratios", unitRatio, n.PairRatioMedian, b.PairRatioMedian)
	c.row("bare, median", unitPerS, n.BareMedian, b.BareMedian)
	c.row("supervised, median", unitPerS, n.SupervisedMedian, b.SupervisedMedian)
	c.row("worker CPU per request, bare", unitUS, n.BareCPUPerReqUS, b.BareCPUPerReqUS)
	c.row("worker CPU per request, supervised", unitUS, n.SupCPUPerReqUS, b.SupCPUPerReqUS)
	c.row("supervisor CPU over the supervised load", unitMS, n.SupervisorCPUMS, b.SupervisorCPUMS)
	c.row("failed requests", "", float64(n.Failed), float64(b.Failed))
}

func compareFlatness(c *comparer, n, b *flatResult) {
	c.phase = fmt.Sprintf("flatness, %d upgrades", n.Asked)
	c.row("upgrades done", "", float64(n.Done), float64(b.Done))
	c.row("upgrades per second", unitRate, float64(n.Done)/max(n.Seconds, 1e-9), float64(b.Done)/max(b.Seconds, 1e-9))
	c.row("supervisor VmRSS before", unitMB, mb(n.Before.RSSKB), mb(b.Before.RSSKB))
	c.row("supervisor VmRSS after", unitMB, mb(n.After.RSSKB), mb(b.After.RSSKB))
	c.row("supervisor peak (max VmRSS, VmHWM)", unitMB, mb(max(n.MaxRSSKB, n.After.HWMKB)), mb(max(b.MaxRSSKB, b.After.HWMKB)))
	c.row("supervisor open fds before", "", float64(n.Before.FDs), float64(b.Before.FDs))
	c.row("supervisor open fds after", "", float64(n.After.FDs), float64(b.After.FDs))
	c.row("children after", "", float64(n.After.Children), float64(b.After.Children))
	c.row("zombies after", "", float64(n.After.Zombies), float64(b.After.Zombies))
	c.row("light load: failed requests", "", float64(failedLight(n)), float64(failedLight(b)))
}

func failedLight(f *flatResult) int {
	n := 0
	for _, l := range f.Load {
		n += l.Failed
	}
	return n
}

// printComparison is the report of a run with --baseline: each figure of
// both builds side by side, then each build's targets.
func printComparison(w io.Writer, r *report) {
	printQueryMix(w, r)
	fmt.Fprintln(w, "COMPARISON: both builds measured in this run, alternated within every phase; ratio = new / baseline")
	fmt.Fprintf(w, "  new:      %s\n", r.Source)
	fmt.Fprintf(w, "  baseline: %s\n", r.Baseline.Source)
	var how []string
	if len(r.Upgrades) > 0 {
		how = append(how, fmt.Sprintf("upgrades in %v batches per build and client mode", r.Options["batches"]))
	}
	if r.Throughput != nil {
		how = append(how, fmt.Sprintf("throughput in %v rounds of bare then supervised per build", r.Options["rounds"]))
	}
	if r.Flatness != nil {
		how = append(how, fmt.Sprintf("flatness in batches of %v upgrades", r.Options["flat_batch"]))
	}
	fmt.Fprintf(w, "  %s; each figure as without --baseline (see --help)\n", strings.Join(how, ", "))
	t := &table{}
	for i, c := range r.Comparison {
		if i == 0 || c.Phase != r.Comparison[i-1].Phase {
			t.row() // a blank line
			t.row(c.Phase, "new", "baseline", "new/baseline")
		}
		t.row("  "+c.Figure, value(c.New, c.Unit), value(c.Baseline, c.Unit), ratio(c))
	}
	t.print(w)
	var details strings.Builder
	for _, res := range r.all() {
		printUpgradeDetails(&details, res.Upgrades, res.Build+" ")
		if t := res.Throughput; t != nil && t.Error != "" {
			fmt.Fprintf(&details, "  %s throughput PHASE ERROR: %s\n", res.Build, t.Error)
		}
		if f := res.Flatness; f != nil && f.Error != "" {
			fmt.Fprintf(&details, "  %s flatness PHASE ERROR: %s\n", res.Build, f.Error)
		}
	}
	if details.Len() > 0 {
		fmt.Fprintf(w, "\n%s", details.String())
	}
	fmt.Fprintf(w, "\nload average at end: %s\n\n", r.Machine.LoadEnd)
	printVerdicts(w, "TARGETS (issue 2), new", r.Verdicts)
	fmt.Fprintln(w)
	printVerdicts(w, "TARGETS (issue 2), baseline", r.Baseline.Verdicts)
	printProblems(w, r.Problems)
}

func value(v float64, unit string) string {
	switch unit {
	case "", unitPerS, unitUS:
		if unit == "" {
			return fmt.Sprintf("%.0f", v)
		}
		return fmt.Sprintf("%.0f %s", v, unit)
	case unitRatio:
		return fmt.Sprintf("%.3f", v)
	case unitMB, unitMS:
		return fmt.Sprintf("%.1f %s", v, unit)
	case unitRate:
		return fmt.Sprintf("%.1f%s", v, unit)
	}
	return fmt.Sprintf("%g %s", v, unit)
}

func ratio(c comparison) string {
	switch {
	case c.Baseline != 0:
		return fmt.Sprintf("%.3f", c.Ratio)
	case c.New == 0:
		return "(both 0)"
	}
	return "-"
}
