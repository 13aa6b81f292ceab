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

	ready []float64 // each upgrade's ready_ms, for ReadyMS
}

// runFlatness upgrades a supervisor opts.flatUpgrades times back to back,
// each time waiting for the new generation and for the old one to drain,
// and compares the supervisor's memory, fds and children before and after.
// With two builds, both supervisors run (with their light load) throughout,
// and the upgrades alternate between them in batches. It returns one result
// per build.
func runFlatness(ctx context.Context, env *env) []flatResult {
	o := env.opts
	runs := make([]*flatRun, len(env.builds))
	for i, b := range env.builds {
		runs[i] = &flatRun{build: b, res: flatResult{Asked: o.flatUpgrades}}
		defer runs[i].stop(env)
		runs[i].start(ctx, env)
	}
	err := sleepCtx(ctx, o.warmup+settle)
	for _, r := range runs {
		r.fail(err)
		r.fail(r.res.begin(r.sup))
	}
	size := o.flatBatchSize()
	for from := 1; from <= o.flatUpgrades; from += size {
		for _, r := range runs {
			r.fail(r.res.upgrades(ctx, env, r, from, min(from+size-1, o.flatUpgrades)))
		}
	}
	out := make([]flatResult, len(runs))
	for i, r := range runs {
		r.fail(r.res.end(ctx, r.sup))
		r.stopLoad()
		out[i] = r.res
	}
	return out
}

// flatRun is the flatness phase of one build: its supervisor, and the light
// load on it.
type flatRun struct {
	build   *build
	sup     *supervisor
	modes   []loadgen.Mode
	loads   []*loadgen.Run // one per mode
	clients int            // in each
	res     flatResult
	err     error // the first error; nothing more is done after it
}

// start starts the supervisor and the light load on it.
func (r *flatRun) start(ctx context.Context, env *env) {
	o := env.opts
	sup, err := startSupervisor(r.build.Bins, o.drainTimeout, o.wait)
	if err != nil {
		r.fail(err)
		return
	}
	r.sup = sup
	if o.flatClients > 0 {
		r.modes = []loadgen.Mode{loadgen.NewConn, loadgen.KeepAlive}
	}
	r.clients = o.flatClients
	for _, mode := range r.modes {
		ld, err := startLoad(ctx, env, sup.addr, o.seed, loadgen.Config{Mode: mode, Clients: o.flatClients, Pause: o.flatPause})
		if err != nil {
			r.fail(err)
			return
		}
		r.loads = append(r.loads, ld)
	}
}

// fail notes the first error.
func (r *flatRun) fail(err error) {
	if err != nil && r.err == nil {
		r.err = err
		r.res.Error = err.Error()
	}
}

func (r *flatRun) stopLoad() {
	for i, ld := range r.loads {
		r.res.Load = append(r.res.Load, summarizeLoad(ld.Stop(), r.modes[i], r.clients))
	}
	r.loads = nil
}

// stop stops what is still running.
func (r *flatRun) stop(env *env) {
	r.stopLoad()
	if r.sup != nil {
		env.stopSupervisor(r.sup)
	}
}

// begin reads the supervisor's usage before the upgrades.
func (res *flatResult) begin(sup *supervisor) error {
	if res.Error != "" {
		return nil
	}
	var err error
	if res.Before, err = procwatch.ReadUsage(sup.PID); err != nil {
		return fmt.Errorf("reading the supervisor's /proc: %w", err)
	}
	res.MaxRSSKB = res.Before.RSSKB
	res.RSSSeries = []rssPoint{{0, res.Before.RSSKB}}
	return nil
}

// upgrades upgrades r's supervisor from the from-th time to the to-th.
func (res *flatResult) upgrades(ctx context.Context, env *env, r *flatRun, from, to int) error {
	if res.Error != "" {
		return nil
	}
	o := env.opts
	start := time.Now()
	defer func() { res.Seconds += time.Since(start).Seconds() }()
	for i := from; i <= to; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		u, err := r.sup.hup(o.wait)
		if err != nil {
			return fmt.Errorf("upgrade %d: %w", i, err)
		}
		if !u.OK {
			res.Failed++
			warnf("flatness: %s %d to generation %d failed: %s", r.build.Label("upgrade"), i, u.Gen, u.Reason)
			continue
		}
		if err := r.sup.waitDrained(u, o.wait); err != nil {
			return fmt.Errorf("upgrade %d: %w", i, err)
		}
		res.Done++
		res.ready = append(res.ready, u.ReadyMS)
		rss := res.sample(r.sup.PID, i)
		if i == 1 {
			if err := sleepCtx(ctx, settle); err != nil {
				return err
			}
			res.AfterFirst, _ = procwatch.ReadUsage(r.sup.PID)
		}
		if every := max(1, o.flatUpgrades/10); i%every == 0 {
			res.RSSSeries = append(res.RSSSeries, rssPoint{i, rss})
			progressf("flatness: %d/%d upgrades, %s RSS %.1f MB", i, o.flatUpgrades, r.build.Label("supervisor"), mb(rss))
		}
	}
	return nil
}

// end reads the supervisor's usage after the upgrades.
func (res *flatResult) end(ctx context.Context, sup *supervisor) error {
	if res.Error != "" {
		return nil
	}
	start := time.Now()
	defer func() { res.Seconds += time.Since(start).Seconds() }()
	res.ReadyMS = median(res.ready)
	if err := sleepCtx(ctx, settle); err != nil {
		return err
	}
	var err error
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
