package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/procswitch/supervisor/internal/control"
	"github.com/procswitch/supervisor/internal/history"
	"github.com/procswitch/supervisor/internal/supervisor"
)

// What `supervisor ctl` prints for people; --json prints the protocol's
// own objects instead.

func printStatus(w io.Writer, st *supervisor.Status) {
	if st == nil {
		return
	}
	fmt.Fprintf(w, "supervisor pid %d, mode %s", st.PID, st.Mode)
	if st.State != "" {
		fmt.Fprintf(w, ", state %s", st.State)
	}
	fmt.Fprintln(w)
	if st.Current != nil {
		printGen(w, "serving", st.Current)
	} else {
		fmt.Fprintln(w, "serving: no generation")
	}
	if st.Upgrading != nil {
		printGen(w, "upgrading", st.Upgrading)
	}
	for i := range st.Draining {
		printGen(w, "draining", &st.Draining[i])
	}
	printVersions(w, st.Versions)
	if st.ProbationUntil != nil {
		fmt.Fprintf(w, "on probation until %s: a crash or a hang of generation %d rolls back by itself\n",
			st.ProbationUntil.Format(time.RFC3339), currentGen(st))
	}
	if st.FDStore > 0 {
		fmt.Fprintf(w, "fd store: %d fds held for the workers (at most %d)\n", st.FDStore, st.FDStoreMax)
	}
	printResult(w, "last upgrade", st.LastUpgrade)
	if st.LastSelfUpgrade != nil {
		printResult(w, "last self-upgrade", st.LastSelfUpgrade)
	}
	if u := st.LastReload; u != nil {
		printReload(w, u)
	}
	if st.Stopping {
		fmt.Fprintln(w, "stopping: draining")
	}
}

func printGen(w io.Writer, label string, g *supervisor.GenStatus) {
	fmt.Fprintf(w, "%s: generation %d (%s), binary %s", label, g.Gen, g.Phase, g.Binary)
	if g.Version != "" {
		fmt.Fprintf(w, ", version %s", g.Version)
	}
	if g.ReadyMS > 0 {
		fmt.Fprintf(w, ", ready in %.1f ms", g.ReadyMS)
	}
	fmt.Fprintln(w)
	for _, wk := range g.Workers {
		state := "starting"
		if wk.Ready {
			state = "ready"
		}
		if wk.Reloading {
			state += ", reloading"
		}
		fmt.Fprintf(w, "  worker pid %d %s", wk.PID, state)
		if wk.Version != "" {
			fmt.Fprintf(w, ", reported version %s", wk.Version)
		}
		if wk.Restarts > 0 {
			fmt.Fprintf(w, ", %d restarts", wk.Restarts)
		}
		if wk.Status != "" {
			fmt.Fprintf(w, ": %s", wk.Status)
		}
		if sb := wk.Standby; sb != nil {
			how := "starting"
			if sb.Waiting {
				how = "waiting"
			}
			fmt.Fprintf(w, "; standby pid %d %s", sb.PID, how)
		}
		fmt.Fprintln(w)
	}
}

// printReload prints the last reload's result.
func printReload(w io.Writer, u *supervisor.UpgradeStatus) {
	if u.OK {
		fmt.Fprintf(w, "last reload: generation %d reloaded at %s in %.1f ms%s\n", u.Gen, u.At.Format(time.RFC3339),
			u.ReadyMS, versionNote(u.Version))
		return
	}
	fmt.Fprintf(w, "last reload: FAILED at %s: %s (%s)\n", u.At.Format(time.RFC3339), u.Reason, u.Kind)
}

// printResult prints an upgrade's or a self-upgrade's result.
func printResult(w io.Writer, label string, u *supervisor.UpgradeStatus) {
	switch {
	case u == nil:
		fmt.Fprintf(w, "%s: none yet\n", label)
	case u.OK && u.Gen > 0:
		fmt.Fprintf(w, "%s: generation %d succeeded at %s\n", label, u.Gen, u.At.Format(time.RFC3339))
	case u.OK:
		fmt.Fprintf(w, "%s: succeeded at %s\n", label, u.At.Format(time.RFC3339))
	case u.Kind != "":
		fmt.Fprintf(w, "%s: FAILED at %s: %s (%s)\n", label, u.At.Format(time.RFC3339), u.Reason, u.Kind)
	default:
		fmt.Fprintf(w, "%s: FAILED at %s: %s\n", label, u.At.Format(time.RFC3339), u.Reason)
	}
}

func currentGen(st *supervisor.Status) int {
	if st.Current == nil {
		return 0
	}
	return st.Current.Gen
}

// printVersions lists the binaries held open, newest first, with what
// `ctl rollback --to` takes.
func printVersions(w io.Writer, versions []supervisor.VersionStatus) {
	if len(versions) == 0 {
		return
	}
	fmt.Fprintln(w, "held versions (ctl rollback --to GEN):")
	for _, v := range versions {
		fmt.Fprintf(w, "  generation %d: binary %s", v.Gen, v.Binary)
		if v.Version != "" {
			fmt.Fprintf(w, ", version %s", v.Version)
		}
		fmt.Fprintf(w, ", since %s", v.Since.Format(time.RFC3339))
		if v.Current {
			fmt.Fprint(w, ", serving")
		}
		if v.Bad {
			fmt.Fprintf(w, ", BAD: %s", v.Reason)
		}
		fmt.Fprintln(w)
	}
}

// printHistory prints the records of a history answer: one line each, or
// with asJSON the history's own JSON lines. Unreadable lines passed over
// are counted on stderr.
func printHistory(stdout, stderr io.Writer, asJSON bool, resp control.Response) {
	for _, r := range resp.History {
		if asJSON {
			b, _ := json.Marshal(r)
			fmt.Fprintln(stdout, string(b))
			continue
		}
		fmt.Fprintln(stdout, historyLine(r))
	}
	if len(resp.History) == 0 && !asJSON {
		fmt.Fprintln(stdout, "no history yet")
	}
	if resp.Skipped > 0 {
		fmt.Fprintf(stderr, "supervisor ctl history: %d unreadable lines passed over\n", resp.Skipped)
	}
}

// historyLine is one record for people: time, event, trigger, generations,
// version, result and kind, times, and the reason or what was lost.
func historyLine(r history.Record) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Time.Format("2006-01-02T15:04:05.000Z07:00"), r.Event)
	if r.Trigger != "" {
		fmt.Fprintf(&b, " (%s)", r.Trigger)
	}
	if r.Gen > 0 {
		fmt.Fprintf(&b, " gen %d", r.Gen)
	}
	if r.FromGen > 0 {
		fmt.Fprintf(&b, " from %d", r.FromGen)
	}
	if r.Version != "" {
		fmt.Fprintf(&b, " version %s", r.Version)
	}
	if r.WorkerVersion != "" {
		fmt.Fprintf(&b, " workers' version %s", r.WorkerVersion)
	}
	fmt.Fprintf(&b, ": %s", r.Result)
	if r.Kind != "" {
		fmt.Fprintf(&b, " (%s)", r.Kind)
	}
	for _, ms := range []struct {
		name string
		v    float64
	}{{"ready", r.ReadyMS}, {"blackout", r.BlackoutMS}, {"drain", r.DrainMS}} {
		if ms.v > 0 {
			fmt.Fprintf(&b, ", %s %.1f ms", ms.name, ms.v)
		}
	}
	if r.Reason != "" {
		fmt.Fprintf(&b, ": %s", r.Reason)
	}
	if r.Lost != "" {
		fmt.Fprintf(&b, "; lost: %s", r.Lost)
	}
	return b.String()
}
