package main

import (
	"context"
	"fmt"
	"time"

	"github.com/procswitch/supervisor/test/loadgen"
	"github.com/procswitch/supervisor/test/procwatch"
)

// settle is how long to wait, after the last event, before reading /proc:
// the supervisor closes a drained generation's notify socket just after it
// logs "generation drained".
const settle = 500 * time.Millisecond

// lightLoad is the load that runs during the flatness phase.
type lightLoad struct {
	Mode     string         `json:"mode"`
	Clients  int            `json:"clients"`
	Requests int            `json:"requests"`
	Failed   int            `json:"failed"`
	ByClass  map[string]int `json:"by_class"`
	Samples  []string       `json:"error_samples,omitempty"`
}

// rssPoint is the supervisor's RSS after a number of upgrades.
type rssPoint struct {
	Upgrades int `json:"upgrades"`
	RSSKB    int `json:"rss_kb"`
}

// flatResult is the resource flatness phase.
type flatResult struct {
	Asked      int             `json:"upgrades_asked"`
	Done       int             `json:"upgrades_done"`   // succeeded and drained
	Failed     int             `json:"upgrades_failed"` // the supervisor reported a failed upgrade
	Seconds    float64         `json:"seconds"`
	ReadyMS    float64         `json:"ready_median_ms"`
	Before     procwatch.Usage `json:"before"`
	AfterFirst procwatch.Usage `json:"after_first"` // after the first upgrade had drained
	After      procwatch.Usage `json:"after"`
	MaxRSSKB   int             `json:"max_rss_kb"` // of the samples taken after each upgrade
	RSSSeries  []rssPoint      `json:"rss_series"` // VmRSS every tenth of the way
	Load       []lightLoad     `json:"load"`
	Error      string          `json:"error,omitempty"`
}

// runFlatness upgrades a supervisor opts.flatUpgrades times back to back,
// each time waiting for the new generation and for the old one to drain,
// and compares the supervisor's memory, fds and children before and after.
func runFlatness(ctx context.Context, env *env) flatResult {
	o := env.opts
	res := flatResult{Asked: o.flatUpgrades}
	sup, err := startSupervisor(env.bins, o.drainTimeout, o.wait)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer env.stopSupervisor(sup)
	var modes []loadgen.Mode
	var loads []*loadgen.Run
	if o.flatClients > 0 {
		modes = []loadgen.Mode{loadgen.NewConn, loadgen.KeepAlive}
	}
	for _, mode := range modes {
		var ld *loadgen.Run
		ld, err = startLoad(ctx, env, sup.addr, o.seed, loadgen.Config{Mode: mode, Clients: o.flatClients, Pause: o.flatPause})
		if err != nil {
			break
		}
		loads = append(loads, ld)
	}
	if err == nil {
		err = res.upgradeAll(ctx, env, sup)
	}
	for i, ld := range loads {
		res.Load = append(res.Load, summarizeLoad(ld.Stop(), modes[i], o.flatClients))
	}
	if err != nil {
		res.Error = err.Error()
	}
	return res
}

func (res *flatResult) upgradeAll(ctx context.Context, env *env, sup *supervisor) error {
	o := env.opts
	if err := sleepCtx(ctx, o.warmup+settle); err != nil {
		return err
	}
	var err error
	if res.Before, err = procwatch.ReadUsage(sup.PID); err != nil {
		return fmt.Errorf("reading the supervisor's /proc: %w", err)
	}
	res.MaxRSSKB = res.Before.RSSKB
	res.RSSSeries = []rssPoint{{0, res.Before.RSSKB}}
	start := time.Now()
	defer func() { res.Seconds = time.Since(start).Seconds() }()
	var ready []float64
	for i := 1; i <= o.flatUpgrades; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		u, err := sup.hup(o.wait)
		if err != nil {
			return fmt.Errorf("upgrade %d: %w", i, err)
		}
		if !u.OK {
			res.Failed++
			warnf("flatness: upgrade %d to generation %d failed: %s", i, u.Gen, u.Reason)
			continue
		}
		if err := sup.waitDrained(u, o.wait); err != nil {
			return fmt.Errorf("upgrade %d: %w", i, err)
		}
		res.Done++
		ready = append(ready, u.ReadyMS)
		rss := res.sample(sup.PID, i)
		if i == 1 {
			if err := sleepCtx(ctx, settle); err != nil {
				return err
			}
			res.AfterFirst, _ = procwatch.ReadUsage(sup.PID)
		}
		if every := max(1, o.flatUpgrades/10); i%every == 0 {
			res.RSSSeries = append(res.RSSSeries, rssPoint{i, rss})
			progressf("flatness: %d/%d upgrades, supervisor RSS %.1f MB", i, o.flatUpgrades, mb(rss))
		}
	}
	res.ReadyMS = median(ready)
	if err := sleepCtx(ctx, settle); err != nil {
		return err
	}
	if res.After, err = procwatch.ReadUsage(sup.PID); err != nil {
		return fmt.Errorf("reading the supervisor's /proc: %w", err)
	}
	res.MaxRSSKB = max(res.MaxRSSKB, res.After.RSSKB)
	return nil
}

// sample records and returns the supervisor's RSS after upgrade i.
func (res *flatResult) sample(pid, i int) int {
	st, err := procwatch.ReadStatus(pid)
	if err != nil {
		warnf("flatness: upgrade %d: %v", i, err)
		return 0
	}
	res.MaxRSSKB = max(res.MaxRSSKB, st["VmRSS"])
	return st["VmRSS"]
}

func summarizeLoad(r *loadgen.Result, mode loadgen.Mode, clients int) lightLoad {
	l := lightLoad{Mode: mode.String(), Clients: clients, Requests: len(r.Records), Failed: r.Failed(), ByClass: make(map[string]int)}
	for c, n := range r.ByClass() {
		l.ByClass[c.String()] = n
	}
	for _, rec := range r.Errors(5) {
		l.Samples = append(l.Samples, fmt.Sprintf("+%v: %v: %v", rec.Start.Sub(r.Start).Round(time.Millisecond), rec.Class, rec.Err))
	}
	return l
}

func mb(kb int) float64 { return float64(kb) / 1024 }
