package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/procswitch/supervisor/test/loadgen"
)

// httpResult is the final line of an http run.
type httpResult struct {
	Event    string         `json:"event"` // "result"
	Requests int            `json:"requests"`
	Failed   int            `json:"failed"`
	ByClass  map[string]int `json:"by_class"`
	ByPID    map[string]int `json:"by_pid"`
	Versions map[string]int `json:"versions"`
	Errors   []httpError    `json:"errors"` // the first failures, in the order they began
	Queries  []string       `json:"queries"`
	// Set when a mark came: the requests begun before it, how many of those
	// failed, and how many were still in flight at the mark (all finished
	// with a response, or counted in BeforeMarkFailed).
	Marked           bool `json:"marked"`
	BeforeMark       int  `json:"before_mark"`
	BeforeMarkFailed int  `json:"before_mark_failed"`
	InFlightAtMark   int  `json:"in_flight_at_mark"`
	// The first failure's start, in ms after the mark (negative: before).
	FirstFailureAfterMarkMS *float64 `json:"first_failure_after_mark_ms,omitempty"`
}

type httpError struct {
	Class   string  `json:"class"`
	Err     string  `json:"err"`
	Status  int     `json:"status,omitempty"`
	StartMS float64 `json:"start_ms"` // after the run began
	Client  int     `json:"client"`
	Mode    string  `json:"mode"`
}

func runHTTP(args []string) error {
	fs := flag.NewFlagSet("http", flag.ContinueOnError)
	base := fs.String("url", "", "the service, http://HOST:PORT")
	keepAlive := fs.Int("keepalive", 2, "clients that keep their connection")
	newConn := fs.Int("newconn", 2, "clients that open a connection per request")
	max := fs.Duration("max", 5*time.Minute, "longest run")
	pause := fs.Duration("pause", 0, "pause between a client's requests")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *base == "" {
		return errors.New("-url is required")
	}

	var mu sync.Mutex
	var mark time.Time
	ctx, cancel := commands(*max, func(cmd string) {
		if cmd == "mark" {
			mu.Lock()
			mark = time.Now()
			mu.Unlock()
			stdout.emit(map[string]string{"event": "mark"})
		}
	})
	defer cancel()

	queries, err := pickQueries(ctx, *base)
	if err != nil {
		return err
	}
	next := func(client, seq int) string { return queries[(client*7+seq)%len(queries)] }
	start := time.Now()
	var runs []*loadgen.Run
	var modes []loadgen.Mode
	for _, m := range []struct {
		mode loadgen.Mode
		n    int
	}{{loadgen.KeepAlive, *keepAlive}, {loadgen.NewConn, *newConn}} {
		if m.n == 0 {
			continue
		}
		r, err := loadgen.Start(ctx, loadgen.Config{URL: *base, Next: next, Mode: m.mode, Clients: m.n, Pause: *pause})
		if err != nil {
			return err
		}
		runs, modes = append(runs, r), append(modes, m.mode)
	}
	if len(runs) == 0 {
		return errors.New("no clients: give -keepalive or -newconn")
	}
	go announce(ctx, runs, queries)
	<-ctx.Done()

	res := httpResult{Event: "result", ByClass: map[string]int{}, ByPID: map[string]int{}, Versions: map[string]int{}, Queries: queries}
	mu.Lock()
	res.Marked = !mark.IsZero()
	mu.Unlock()
	var failed []loadgen.Record
	var failedMode []string
	for i, r := range runs {
		recs := r.Stop().Records
		for _, rec := range recs {
			res.add(rec)
			if rec.Class != loadgen.OK {
				failed = append(failed, rec)
				failedMode = append(failedMode, modes[i].String())
			}
		}
		if res.Marked {
			res.countMark(recs, mark)
		}
	}
	idx := make([]int, len(failed))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return failed[idx[a]].Start.Before(failed[idx[b]].Start) })
	for n, i := range idx {
		if n == 20 {
			break
		}
		rec := failed[i]
		res.Errors = append(res.Errors, httpError{Class: rec.Class.String(), Err: fmt.Sprint(rec.Err), Status: rec.Status,
			StartMS: ms(rec.Start.Sub(start)), Client: rec.Client, Mode: failedMode[i]})
	}
	if res.Marked && len(idx) > 0 {
		d := ms(failed[idx[0]].Start.Sub(mark))
		res.FirstFailureAfterMarkMS = &d
	}
	stdout.emit(res)
	return nil
}

func (r *httpResult) add(rec loadgen.Record) {
	r.Requests++
	r.ByClass[rec.Class.String()]++
	if rec.Class != loadgen.OK {
		r.Failed++
		return
	}
	r.ByPID[strconv.Itoa(rec.PID)]++
	r.Versions[rec.Version]++
}

func (r *httpResult) countMark(recs []loadgen.Record, mark time.Time) {
	for _, rec := range recs {
		if !rec.Start.Before(mark) {
			continue
		}
		r.BeforeMark++
		if rec.Class != loadgen.OK {
			r.BeforeMarkFailed++
		}
		if rec.Start.Add(rec.Latency).After(mark) {
			r.InFlightAtMark++
		}
	}
}

// announce prints the serving line once a request has succeeded.
func announce(ctx context.Context, runs []*loadgen.Run, queries []string) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, r := range runs {
			for _, rec := range r.Snapshot().Records {
				if rec.Class == loadgen.OK {
					stdout.emit(map[string]any{"event": "serving", "pid": rec.PID, "version": rec.Version, "queries": len(queries)})
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// pickQueries draws /path queries on pathfind's built-in 512x512 map and
// keeps those answered 200 (both points free and joined), a mix of short and
// long paths; /healthz when none is. The first request may wait for the
// service to start (socket activation), so it gets a long timeout.
func pickQueries(ctx context.Context, base string) ([]string, error) {
	rng := rand.New(rand.NewPCG(4, 2))
	var keep []string
	for try := 0; try < 48 && len(keep) < 8; try++ {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		fx, fy := rng.IntN(512), rng.IntN(512)
		tx, ty := fx+rng.IntN(64)-32, fy+rng.IntN(64)-32
		if try%2 == 1 {
			tx, ty = rng.IntN(512), rng.IntN(512)
		}
		q := fmt.Sprintf("/path?from=%d,%d&to=%d,%d", fx, fy, tx, ty)
		timeout := 5 * time.Second
		if try == 0 {
			timeout = time.Minute
		}
		rec, err := loadgen.Get(base+q, timeout)
		if err != nil {
			return nil, err
		}
		if rec.Class == loadgen.OK {
			keep = append(keep, q)
		}
	}
	if len(keep) == 0 {
		keep = []string{"/healthz"}
	}
	return keep, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
