package main

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/procswitch/supervisor/test/loadgen"
	"github.com/procswitch/supervisor/test/procwatch"
)

// round is one measurement of one target in the throughput phase.
type round struct {
	Target   string  `json:"target"` // "bare" or "supervised"
	Round    int     `json:"round"`
	PerSec   float64 `json:"req_per_s"`
	Requests int     `json:"requests"` // in the measured window
	Failed   int     `json:"failed"`   // in the whole round, warm-up included
	P50MS    float64 `json:"p50_ms"`
	P99MS    float64 `json:"p99_ms"`
	WrongPID int     `json:"wrong_pid"` // OK answers from another process than the target's worker
	// CPU time used in the measured window by the worker, and by the
	// supervisor (0 when bare): machine noise changes req/s much more than it
	// changes CPU per request.
	WorkerCPUMS     float64 `json:"worker_cpu_ms"`
	CPUPerReqUS     float64 `json:"worker_cpu_us_per_req"`
	SupervisorCPUMS float64 `json:"supervisor_cpu_ms"`
}

// throughputResult is the throughput phase.
type throughputResult struct {
	Clients          int     `json:"clients"`
	Mode             string  `json:"mode"`
	RoundSeconds     float64 `json:"round_seconds"`
	Rounds           []round `json:"rounds"`
	BareMedian       float64 `json:"bare_median_req_per_s"`
	SupervisedMedian float64 `json:"supervised_median_req_per_s"`
	Ratio            float64 `json:"ratio"` // supervised median / bare median
	// Noise-resistant companions: the median of each round's own ratio, the
	// worker's CPU time per request bare and supervised, and the CPU time the
	// supervisor used while the supervised worker was loaded.
	PairRatioMedian   float64 `json:"pair_ratio_median"`
	BareCPUPerReqUS   float64 `json:"bare_cpu_us_per_req"`
	SupCPUPerReqUS    float64 `json:"supervised_cpu_us_per_req"`
	SupervisorCPUMS   float64 `json:"supervisor_cpu_ms"`
	SupervisedSeconds float64 `json:"supervised_seconds"`
	Failed            int     `json:"failed"`
	Error             string  `json:"error,omitempty"`
}

// target is a running pathfind to load.
type target struct {
	name  string // "bare" or "supervised"
	build *build
	addr  string
	pids  []int // the processes that should answer
	sup   int   // the supervisor's pid, 0 when bare
}

// runThroughput loads pathfind run bare and pathfind under the supervisor
// (no upgrades) in turn, opts.rounds times each (ABAB...), with the same
// clients and the same query sequence, so that machine noise hits both.
// With two builds, each round loads the four in turn: this tree's bare and
// supervised, then the baseline's. It returns one result per build.
func runThroughput(ctx context.Context, env *env) []throughputResult {
	o := env.opts
	res := make([]throughputResult, len(env.builds))
	targets := make([][]target, len(env.builds))
	for i, b := range env.builds {
		res[i] = throughputResult{Clients: o.tpClients, Mode: loadgen.KeepAlive.String(), RoundSeconds: o.round.Seconds()}
		bare, addr, _, err := startBare(b.Bins.pathfind, o.wait)
		if err != nil {
			res[i].Error = err.Error()
			return finishAll(res, nil)
		}
		defer env.stopProc(bare)
		sup, err := startSupervisor(b.Bins, o.drainTimeout, o.wait)
		if err != nil {
			res[i].Error = err.Error()
			return finishAll(res, nil)
		}
		defer env.stopSupervisor(sup)
		targets[i] = []target{{"bare", b, addr, []int{bare.PID}, 0}, {"supervised", b, sup.addr, sup.pids, sup.PID}}
	}
	per := make([][2][]float64, len(env.builds))
	for n := 1; n <= o.rounds; n++ {
		for i := range env.builds {
			for j, tg := range targets[i] {
				r, err := measureRound(ctx, env, tg, n)
				if err != nil {
					res[i].Error = err.Error()
					return finishAll(res, per)
				}
				res[i].Rounds = append(res[i].Rounds, r)
				res[i].Failed += r.Failed
				per[i][j] = append(per[i][j], r.PerSec)
			}
		}
	}
	return finishAll(res, per)
}

// finishAll computes each build's figures from its rounds' req/s.
func finishAll(res []throughputResult, per [][2][]float64) []throughputResult {
	for i := range res {
		var p [2][]float64
		if i < len(per) {
			p = per[i]
		}
		res[i] = res[i].finish(p)
	}
	return res
}

func (res throughputResult) finish(per [2][]float64) throughputResult {
	res.BareMedian, res.SupervisedMedian = median(per[0]), median(per[1])
	if res.BareMedian > 0 {
		res.Ratio = res.SupervisedMedian / res.BareMedian
	}
	var pairs []float64
	for i := 0; i < len(per[0]) && i < len(per[1]); i++ {
		if per[0][i] > 0 {
			pairs = append(pairs, per[1][i]/per[0][i])
		}
	}
	res.PairRatioMedian = median(pairs)
	var cpu [2][]float64
	for _, r := range res.Rounds {
		j := 0
		if r.Target == "supervised" {
			j = 1
			res.SupervisorCPUMS += r.SupervisorCPUMS
			res.SupervisedSeconds += res.RoundSeconds
		}
		cpu[j] = append(cpu[j], r.CPUPerReqUS)
	}
	res.BareCPUPerReqUS, res.SupCPUPerReqUS = median(cpu[0]), median(cpu[1])
	return res
}

// measureRound loads tg for half opts.warmup then opts.round, and counts the OK
// answers that arrived within the measured part.
func measureRound(ctx context.Context, env *env, tg target, n int) (round, error) {
	o := env.opts
	start := time.Now()
	ld, err := startLoad(ctx, env, tg.addr, o.seed+uint64(n), loadgen.Config{Mode: loadgen.KeepAlive, Clients: o.tpClients})
	if err != nil {
		return round{Target: tg.name, Round: n}, err
	}
	from := start.Add(o.warmup / 2)
	to := from.Add(o.round)
	err = sleepCtx(ctx, time.Until(from))
	cpu0, cpuErr := tg.cpu()
	if err == nil {
		err = sleepCtx(ctx, time.Until(to))
	}
	cpu1, cpuErr1 := tg.cpu()
	res := ld.Stop()
	r := round{Target: tg.name, Round: n, Failed: res.Failed()}
	if err != nil {
		return r, err
	}
	if cpuErr != nil || cpuErr1 != nil {
		warnf("throughput: %s round %d: reading CPU time: %v", tg.build.Label(tg.name), n, errors.Join(cpuErr, cpuErr1))
	}
	r.WorkerCPUMS, r.SupervisorCPUMS = ms(cpu1[0]-cpu0[0]), ms(cpu1[1]-cpu0[1])
	var in []loadgen.Record
	for _, rec := range res.Records {
		end := rec.Start.Add(rec.Latency)
		if rec.Class != loadgen.OK || end.Before(from) || end.After(to) {
			continue
		}
		in = append(in, rec)
		if !slices.Contains(tg.pids, rec.PID) {
			r.WrongPID++
		}
	}
	s := summarize(in)
	r.Requests, r.PerSec, r.P50MS, r.P99MS = len(in), float64(len(in))/o.round.Seconds(), s.P50MS, s.P99MS
	if len(in) > 0 {
		r.CPUPerReqUS = r.WorkerCPUMS * 1000 / float64(len(in))
	}
	if r.Failed > 0 {
		warnf("throughput: %s round %d: %d requests failed:\n%s", tg.build.Label(tg.name), n, r.Failed, res.Summary())
	}
	return r, nil
}

// cpu is the CPU time used so far by the target's workers and by its
// supervisor.
func (tg target) cpu() ([2]time.Duration, error) {
	var c [2]time.Duration
	var err error
	if c[0], err = procwatch.CPUTime(tg.pids...); err != nil || tg.sup == 0 {
		return c, err
	}
	c[1], err = procwatch.CPUTime(tg.sup)
	return c, err
}
