package main

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/procswitch/supervisor/test/loadgen"
	"github.com/procswitch/supervisor/test/procwatch"
)

// latency summarises a set of requests; latencies are of OK requests.
type latency struct {
	Requests int     `json:"requests"`
	Failed   int     `json:"failed"`
	P50MS    float64 `json:"p50_ms"`
	P99MS    float64 `json:"p99_ms"`
	MaxMS    float64 `json:"max_ms"`
}

func summarize(recs []loadgen.Record) latency {
	s := (&loadgen.Result{Records: recs}).Stats()
	return latency{Requests: s.Requests, Failed: s.Failed, P50MS: ms(s.P50), P99MS: ms(s.P99), MaxMS: ms(s.Max)}
}

// upgradeRecord is one upgrade of the upgrades phase.
type upgradeRecord struct {
	Gen      int     `json:"gen"`
	OK       bool    `json:"ok"`
	Reason   string  `json:"reason,omitempty"`
	Pids     []int   `json:"pids"`
	ReadyMS  float64 `json:"ready_ms"`
	SwitchMS float64 `json:"switch_ms"` // SIGHUP to the first answer from pids; -1 when none came
	// The switch time's parts, by the timestamps of the supervisor's log
	// lines: SIGHUP to "upgrade started"; ReadyMS (start to ready); and from
	// "upgrade succeeded", after which the old generation is told to drain,
	// to the first answer from pids, negative when the new generation
	// answered before the drain (it accepts beside the old one once ready).
	SignalMS     float64 `json:"signal_ms"`
	DrainToNewMS float64 `json:"drain_to_new_ms"`
	// WorkerCPUMS is the CPU time the new workers had used when the
	// outcome was seen (procwatch.SchedTime): their start to READY=1, plus
	// the little they served since. Unlike ReadyMS it does not grow when
	// other processes take the CPU; 0 when it could not be read.
	WorkerCPUMS float64 `json:"worker_cpu_ms"`
}

// modeResult is the upgrades phase in one client mode.
type modeResult struct {
	Mode           string          `json:"mode"`
	Clients        int             `json:"clients"`
	Seconds        float64         `json:"seconds"`
	Requests       int             `json:"requests"`
	Failed         int             `json:"failed"`
	ByClass        map[string]int  `json:"by_class"`
	ErrorSamples   []string        `json:"error_samples,omitempty"`
	OKPerSecond    float64         `json:"ok_per_second"`
	Steady         latency         `json:"steady"`
	AfterUpgrade   latency         `json:"after_upgrade"`
	P99Ratio       float64         `json:"p99_ratio"` // after_upgrade.p99 / steady.p99
	Upgrades       []upgradeRecord `json:"upgrades"`
	UpgradesOK     int             `json:"upgrades_ok"`
	NoNewAnswer    int             `json:"upgrades_without_new_answer"`
	SwitchMedianMS float64         `json:"switch_median_ms"`
	SwitchP90MS    float64         `json:"switch_p90_ms"`
	ReadyMedianMS  float64         `json:"ready_median_ms"`
	// Medians of the switch time's parts (see upgradeRecord).
	SignalMedianMS     float64 `json:"signal_median_ms"`
	DrainToNewMedianMS float64 `json:"drain_to_new_median_ms"`
	// The part of the switch time after the new generation was ready by the
	// supervisor's clock: switch_ms - ready_ms, per upgrade, median.
	BeyondReadyMedianMS float64 `json:"switch_minus_ready_median_ms"`
	WorkerCPUMedianMS   float64 `json:"worker_cpu_median_ms"` // see upgradeRecord.WorkerCPUMS
	Error               string  `json:"error,omitempty"`

	// Gathered batch by batch, for finish.
	steady, after []loadgen.Record // OK or not, outside the warm-up
	parts         switchParts
	workerCPU     map[int]float64 // by generation: upgradeRecord.WorkerCPUMS
}

// switchParts are the switch times and their parts, one per upgrade that has
// each (see upgradeRecord).
type switchParts struct {
	switches, ready, beyond, signal, drainToNew, workerCPU []float64
}

// maxErrorSamples is how many failed requests a modeResult describes.
const maxErrorSamples = 10

// runUpgrades measures opts.upgrades SIGHUP upgrades under load in one
// client mode, on a supervisor of its own for each build: steady load, the
// upgrades spaced by opts.every, steady load again. With two builds, it does
// so in batches, alternating the builds, each batch with a share of the
// steady load; it returns one result per build.
func runUpgrades(ctx context.Context, env *env, mode loadgen.Mode) []modeResult {
	o := env.opts
	runs := make([]*upgradeRun, len(env.builds))
	for i, b := range env.builds {
		runs[i] = &upgradeRun{build: b, mode: mode, res: modeResult{Mode: mode.String(), Clients: o.clients}}
		sup, err := startSupervisor(b.Bins, o.drainTimeout, o.wait)
		if err != nil {
			runs[i].res.Error = err.Error()
			continue
		}
		runs[i].sup = sup
		defer env.stopSupervisor(sup)
	}
	batches := o.upgradeBatches()
	for n := range batches {
		upgrades := o.upgrades*(n+1)/batches - o.upgrades*n/batches
		// Each build goes first in every other batch: whatever the one before
		// leaves behind (a draining generation, a warm cache, the machine's
		// mood) must not always fall on the same build.
		order := runs
		if n%2 == 1 {
			order = slices.Clone(runs)
			slices.Reverse(order)
		}
		for _, r := range order {
			if r.sup != nil && r.res.Error == "" && ctx.Err() == nil {
				r.batch(ctx, env, upgrades, o.steady/time.Duration(batches), o.seed+uint64(n))
			}
		}
	}
	out := make([]modeResult, len(runs))
	for i, r := range runs {
		r.res.finish()
		out[i] = r.res
	}
	return out
}

// upgradeRun is the upgrades phase of one build in one client mode.
type upgradeRun struct {
	build *build
	mode  loadgen.Mode
	sup   *supervisor
	res   modeResult
}

// batch loads the supervisor for opts.warmup, then steady, then upgrades
// it n times, then loads it for opts.window and steady again.
func (r *upgradeRun) batch(ctx context.Context, env *env, n int, steady time.Duration, seed uint64) {
	o := env.opts
	start := time.Now()
	ld, err := startLoad(ctx, env, r.sup.addr, seed, loadgen.Config{Mode: r.mode, Clients: o.clients})
	if err != nil {
		r.res.Error = err.Error()
		return
	}
	steadyFrom := start.Add(o.warmup)
	var ups []procwatch.Upgrade
	err = sleepCtx(ctx, o.warmup+steady)
	for i := 0; err == nil && i < n; i++ {
		var u procwatch.Upgrade
		u, err = r.sup.hup(o.wait)
		if err != nil {
			break
		}
		if cpu, cerr := procwatch.SchedTime(u.PIDs...); cerr == nil && u.OK {
			if r.res.workerCPU == nil {
				r.res.workerCPU = make(map[int]float64)
			}
			r.res.workerCPU[u.Gen] = ms(cpu)
		}
		ups = append(ups, u)
		if err = r.sup.waitDrained(u, o.wait); err != nil {
			break
		}
		err = sleepCtx(ctx, time.Until(u.Sent.Add(o.every)))
	}
	if err == nil {
		err = sleepCtx(ctx, o.window+steady)
	}
	result := ld.Stop()
	if err != nil {
		r.res.Error = err.Error()
	}
	r.res.add(result, ups, r.sup.Log.All(), steadyFrom, o.window)
}

// add counts one batch's load, the upgrades and the supervisor's log in.
func (res *modeResult) add(r *loadgen.Result, ups []procwatch.Upgrade, log []procwatch.Entry, steadyFrom time.Time, window time.Duration) {
	res.Seconds += r.End.Sub(r.Start).Seconds()
	res.Requests += len(r.Records)
	res.Failed += r.Failed()
	if res.ByClass == nil {
		res.ByClass = make(map[string]int)
	}
	for c, n := range r.ByClass() {
		res.ByClass[c.String()] += n
	}
	if left := maxErrorSamples - len(res.ErrorSamples); left > 0 {
		for _, rec := range r.Errors(left) {
			res.ErrorSamples = append(res.ErrorSamples, fmt.Sprintf("+%v client %d: %v: %v",
				rec.Start.Sub(r.Start).Round(time.Millisecond), rec.Client, rec.Class, rec.Err))
		}
	}
	for _, rec := range r.Records {
		switch {
		case nearUpgrade(rec, ups, window):
			res.after = append(res.after, rec)
		case !rec.Start.Before(steadyFrom):
			res.steady = append(res.steady, rec)
		}
	}
	res.switchTimes(r, ups, log)
}

// finish computes the figures of all the batches added.
func (res *modeResult) finish() {
	if res.Seconds > 0 {
		res.OKPerSecond = float64(res.Requests-res.Failed) / res.Seconds
	}
	res.Steady, res.AfterUpgrade = summarize(res.steady), summarize(res.after)
	if res.Steady.P99MS > 0 {
		res.P99Ratio = res.AfterUpgrade.P99MS / res.Steady.P99MS
	}
	p := &res.parts
	res.SwitchMedianMS, res.SwitchP90MS = median(p.switches), quantile(p.switches, 0.9)
	res.ReadyMedianMS, res.BeyondReadyMedianMS = median(p.ready), median(p.beyond)
	res.SignalMedianMS, res.DrainToNewMedianMS = median(p.signal), median(p.drainToNew)
	res.WorkerCPUMedianMS = median(p.workerCPU)
}

// nearUpgrade says whether rec was under way at some time within window
// after a SIGHUP.
func nearUpgrade(rec loadgen.Record, ups []procwatch.Upgrade, window time.Duration) bool {
	end := rec.Start.Add(rec.Latency)
	for _, u := range ups {
		if end.After(u.Sent) && rec.Start.Before(u.Sent.Add(window)) {
			return true
		}
	}
	return false
}

// switchTimes finds, for each upgrade of a batch, the first answer from a
// worker of the new generation: the new PIDs from the supervisor's log, or else the first
// PID not seen before the SIGHUP. It splits the switch time at the times of
// the supervisor's log lines.
func (res *modeResult) switchTimes(r *loadgen.Result, ups []procwatch.Upgrade, log []procwatch.Entry) {
	first := make(map[int]time.Time) // pid -> its first answer
	for _, rec := range r.Records {
		if rec.Class != loadgen.OK {
			continue
		}
		at := rec.Start.Add(rec.Latency)
		if t, ok := first[rec.PID]; !ok || at.Before(t) {
			first[rec.PID] = at
		}
	}
	p := &res.parts
	for _, u := range ups {
		ur := upgradeRecord{Gen: u.Gen, OK: u.OK, Reason: u.Reason, Pids: u.PIDs, ReadyMS: u.ReadyMS, SwitchMS: -1,
			WorkerCPUMS: res.workerCPU[u.Gen]}
		if u.OK {
			res.UpgradesOK++
			p.ready = append(p.ready, u.ReadyMS)
			if ur.WorkerCPUMS > 0 {
				p.workerCPU = append(p.workerCPU, ur.WorkerCPUMS)
			}
			pids := u.PIDs
			if len(pids) == 0 {
				pids = newPIDs(first, u.Sent)
			}
			started, succeeded, logged := logTimes(log, u)
			if logged {
				ur.SignalMS = ms(started.Sub(u.Sent))
				p.signal = append(p.signal, ur.SignalMS)
			}
			if t, ok := earliest(first, pids, u.Sent); ok {
				ur.SwitchMS = ms(t.Sub(u.Sent))
				p.switches = append(p.switches, ur.SwitchMS)
				p.beyond = append(p.beyond, ur.SwitchMS-u.ReadyMS)
				if logged {
					ur.DrainToNewMS = ms(t.Sub(succeeded))
					p.drainToNew = append(p.drainToNew, ur.DrainToNewMS)
				}
			} else {
				res.NoNewAnswer++
			}
		}
		res.Upgrades = append(res.Upgrades, ur)
	}
}

// logTimes are the times of u's "upgrade started" and outcome lines, by the
// supervisor's clock; ok is false when the log does not have them.
func logTimes(log []procwatch.Entry, u procwatch.Upgrade) (started, outcome time.Time, ok bool) {
	if u.Start < 0 || u.End >= len(log) || u.Start > u.End {
		return started, outcome, false
	}
	started, err1 := time.Parse(time.RFC3339Nano, log[u.Start].Str("time"))
	outcome, err2 := time.Parse(time.RFC3339Nano, log[u.End].Str("time"))
	return started, outcome, err1 == nil && err2 == nil
}

// newPIDs are the PIDs whose first answer came after t.
func newPIDs(first map[int]time.Time, t time.Time) []int {
	var pids []int
	for pid, at := range first {
		if at.After(t) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// earliest is the first answer from any of pids after t.
func earliest(first map[int]time.Time, pids []int, t time.Time) (time.Time, bool) {
	var best time.Time
	for _, pid := range pids {
		if at, ok := first[pid]; ok && at.After(t) && (best.IsZero() || at.Before(best)) {
			best = at
		}
	}
	return best, !best.IsZero()
}

// median is the middle of xs, or the mean of the two middle values; 0 for
// none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// quantile is the nearest-rank quantile of xs; 0 for none.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	rank := int(q*float64(len(s)) + 0.999999)
	rank = max(1, min(rank, len(s)))
	return s[rank-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// sleepCtx sleeps for d, or less when ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
