package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/procswitch/supervisor/test/bench/benchbuild"
)

// Targets, from issue 2's "Benchmark" section.
const (
	targetRatio    = 0.99 // throughput supervised / bare, at least
	targetP99Ratio = 1.5  // p99 after an upgrade / steady p99, at most
	targetSwitchMS = 20.0 // median switch time, at most
	targetRSSMB    = 20.0 // supervisor RSS, at most
)

// report is everything the benchmark found; it is also the JSON output.
type report struct {
	Command string         `json:"command"`
	Machine machine        `json:"machine"`
	Options map[string]any `json:"options"`
	Queries int            `json:"queries"`
	results                // of this tree
	// With --baseline: the baseline build's figures, and each figure of
	// both side by side.
	Baseline   *results     `json:"baseline,omitempty"`
	Comparison []comparison `json:"comparison,omitempty"`
	Problems   []string     `json:"problems,omitempty"`
}

// results are the figures of one build.
type results struct {
	Build      string             `json:"build,omitempty"`  // with --baseline: new or baseline
	Source     *benchbuild.Source `json:"source,omitempty"` // with --baseline
	Upgrades   []modeResult       `json:"upgrades,omitempty"`
	Throughput *throughputResult  `json:"throughput,omitempty"`
	Flatness   *flatResult        `json:"flatness,omitempty"`
	Verdicts   []verdict          `json:"verdicts"`
}

// all are the results of each build: this tree's, then the baseline's.
func (r *report) all() []*results {
	if r.Baseline == nil {
		return []*results{&r.results}
	}
	return []*results{&r.results, r.Baseline}
}

// verdict is one figure against its target.
type verdict struct {
	Target string `json:"target"`
	Value  string `json:"value"`
	Pass   bool   `json:"pass"`
}

func (r *results) add(pass bool, target, format string, args ...any) {
	r.Verdicts = append(r.Verdicts, verdict{Target: target, Value: fmt.Sprintf(format, args...), Pass: pass})
}

// judge compares each build's figures with their targets, and the builds
// with each other.
func (r *report) judge() {
	for _, res := range r.all() {
		res.judge()
	}
	if r.Baseline != nil {
		r.Comparison = compare(&r.results, r.Baseline)
	}
}

// judge compares each figure with its target.
func (r *results) judge() {
	for _, m := range r.Upgrades {
		r.add(m.Failed == 0 && m.Error == "", "0 failed requests, "+m.Mode,
			"%d of %d failed%s", m.Failed, m.Requests, errNote(m.Error))
	}
	for _, m := range r.Upgrades {
		r.add(m.P99Ratio > 0 && m.P99Ratio <= targetP99Ratio, fmt.Sprintf("p99 after upgrade <= %.1fx steady, %s", targetP99Ratio, m.Mode),
			"%.2fx (%.1f ms / %.1f ms)", m.P99Ratio, m.AfterUpgrade.P99MS, m.Steady.P99MS)
	}
	for _, m := range r.Upgrades {
		r.add(m.UpgradesOK > 0 && m.NoNewAnswer == 0 && m.SwitchMedianMS <= targetSwitchMS,
			fmt.Sprintf("median switch time <= %.0f ms, %s", targetSwitchMS, m.Mode),
			"%.1f ms (%d of %d upgrades answered by the new generation)", m.SwitchMedianMS, m.UpgradesOK-m.NoNewAnswer, len(m.Upgrades))
	}
	if t := r.Throughput; t != nil {
		r.add(t.Ratio >= targetRatio && t.Error == "", fmt.Sprintf("throughput ratio >= %.2f", targetRatio),
			"%.3f (%.0f / %.0f req/s)%s", t.Ratio, t.SupervisedMedian, t.BareMedian, errNote(t.Error))
	}
	if f := r.Flatness; f != nil {
		r.judgeFlatness(f)
	}
}

func (r *results) judgeFlatness(f *flatResult) {
	peak := max(f.MaxRSSKB, f.After.HWMKB)
	r.add(peak > 0 && mb(peak) <= targetRSSMB, fmt.Sprintf("supervisor RSS <= %.0f MB", targetRSSMB),
		"peak %.1f MB (VmHWM), %.1f MB before, %.1f MB after", mb(peak), mb(f.Before.RSSKB), mb(f.After.RSSKB))
	done := f.Error == "" && f.Done == f.Asked
	r.add(done && f.After.FDs <= f.Before.FDs, fmt.Sprintf("fds flat after %d upgrades", f.Asked),
		"%d before, %d after (%d after the first)%s", f.Before.FDs, f.After.FDs, f.AfterFirst.FDs, errNote(f.Error))
	r.add(done && f.After.Children == f.Before.Children && f.After.Zombies == 0,
		fmt.Sprintf("processes flat after %d upgrades", f.Asked),
		"%d children before, %d after, %d zombies", f.Before.Children, f.After.Children, f.After.Zombies)
	failed, total := 0, 0
	for _, l := range f.Load {
		failed, total = failed+l.Failed, total+l.Requests
	}
	if len(f.Load) > 0 {
		r.add(failed == 0, "0 failed requests, light load during the flatness upgrades", "%d of %d failed", failed, total)
	}
}

func errNote(err string) string {
	if err == "" {
		return ""
	}
	return "; phase error"
}

// missed says whether this tree's build missed a target.
func (r *report) missed() bool {
	for _, v := range r.Verdicts {
		if !v.Pass {
			return true
		}
	}
	return false
}

// incomplete says whether a phase could not finish, for either build.
func (r *report) incomplete() bool {
	for _, res := range r.all() {
		if res.incomplete() {
			return true
		}
	}
	return false
}

func (r *results) incomplete() bool {
	for _, m := range r.Upgrades {
		if m.Error != "" {
			return true
		}
	}
	return (r.Throughput != nil && r.Throughput.Error != "") || (r.Flatness != nil && r.Flatness.Error != "")
}

func printHeader(w io.Writer, r *report) {
	m := r.Machine
	fmt.Fprintf(w, "switchbench: pathfind under the supervisor (%s)\n", m.Started)
	fmt.Fprintf(w, "machine: nproc %d (GOMAXPROCS %d), %s\n", m.NumCPU, m.GOMAXPROCS, m.CPU)
	fmt.Fprintf(w, "kernel:  %s\n", m.Kernel)
	fmt.Fprintf(w, "go:      %s\n", m.Go)
	fmt.Fprintf(w, "load average at start: %s\n", m.LoadStart)
	fmt.Fprintf(w, "command: %s\n", r.Command)
	fmt.Fprintf(w, "options: %s\n\n", formatOptions(r.Options))
}

func formatOptions(o map[string]any) string {
	keys := make([]string, 0, len(o))
	for k := range o {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%v", k, o[k]))
	}
	return strings.Join(parts, " ")
}

func printReport(w io.Writer, r *report) {
	printQueryMix(w, r)
	if len(r.Upgrades) > 0 {
		printUpgrades(w, r.Upgrades, r.Options)
	}
	if r.Throughput != nil {
		printThroughput(w, r.Throughput)
	}
	if r.Flatness != nil {
		printFlatness(w, r.Flatness)
	}
	fmt.Fprintf(w, "load average at end: %s\n\n", r.Machine.LoadEnd)
	printVerdicts(w, "TARGETS (issue 2)", r.Verdicts)
	printProblems(w, r.Problems)
}

func printQueryMix(w io.Writer, r *report) {
	fmt.Fprintf(w, "query mix: %d distinct /path queries on the default map (seed %v): a third within %d cells, a third within %d, a third anywhere\n\n",
		r.Queries, r.Options["seed"], shortReach, midReach)
}

func printVerdicts(w io.Writer, title string, vs []verdict) {
	fmt.Fprintln(w, title)
	for _, v := range vs {
		mark := "PASS"
		if !v.Pass {
			mark = "MISS"
		}
		fmt.Fprintf(w, "  %s  %-58s %s\n", mark, v.Target, v.Value)
	}
}

func printProblems(w io.Writer, problems []string) {
	if len(problems) > 0 {
		fmt.Fprintln(w, "\nPROBLEMS")
		for _, p := range problems {
			fmt.Fprintf(w, "  - %s\n", p)
		}
	}
}

func writeJSON(file string, r *report) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(file, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("--json: %w", err)
	}
	return nil
}
