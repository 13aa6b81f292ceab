package loadgen

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Class is the outcome of a request.
type Class int

const (
	OK          Class = iota // the expected status and a complete body
	ConnRefused              // connect: connection refused
	ConnOther                // connect failed otherwise
	Reset                    // connection reset (or broken pipe) after connecting
	EOF                      // the connection closed before any byte of a response
	Timeout                  // the request timeout passed
	BadStatus                // a complete response with an unexpected status
	Malformed                // a response that did not parse or was cut short
	Other                    // any other I/O error after connecting
	numClasses
)

var classNames = [numClasses]string{"ok", "connect-refused", "connect-other", "reset", "eof", "timeout", "bad-status", "malformed", "other"}

func (c Class) String() string {
	if c >= 0 && c < numClasses {
		return classNames[c]
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// Record is one request.
type Record struct {
	Start   time.Time     // when the request began (before connecting)
	Latency time.Duration // until the body was read or the request failed
	Class   Class
	Err     error  // nil for OK
	Status  int    // 0 when no response was read
	PID     int    // the X-Worker-Pid header, 0 when absent
	Version string // the X-Worker-Version header
	Client  int    // which client sent it, 0 to Clients-1
	Reused  bool   // sent on a kept-alive connection
	Closed  bool   // the response said "Connection: close"
}

// Result is the record of a run, in the order requests ended.
type Result struct {
	Start, End time.Time
	Records    []Record
}

// Stats summarises a set of requests. Latencies are of OK requests only.
type Stats struct {
	Requests int
	Failed   int
	P50, P99 time.Duration
	Max      time.Duration
	Mean     time.Duration
}

func (s Stats) String() string {
	return fmt.Sprintf("%d requests, %d failed, p50 %v, p99 %v, max %v", s.Requests, s.Failed, s.P50, s.P99, s.Max)
}

// Failed is the number of requests that were not OK.
func (r *Result) Failed() int {
	n := 0
	for _, rec := range r.Records {
		if rec.Class != OK {
			n++
		}
	}
	return n
}

// ByClass counts requests by outcome.
func (r *Result) ByClass() map[Class]int {
	m := make(map[Class]int)
	for _, rec := range r.Records {
		m[rec.Class]++
	}
	return m
}

// ByPID counts OK requests by the worker PID that answered them.
func (r *Result) ByPID() map[int]int {
	m := make(map[int]int)
	for _, rec := range r.Records {
		if rec.Class == OK {
			m[rec.PID]++
		}
	}
	return m
}

// Reconnects is the number of responses that closed their connection.
func (r *Result) Reconnects() int {
	n := 0
	for _, rec := range r.Records {
		if rec.Closed {
			n++
		}
	}
	return n
}

// Errors returns up to max failed requests, the earliest first.
func (r *Result) Errors(max int) []Record {
	var out []Record
	for _, rec := range r.sorted() {
		if rec.Class != OK && len(out) < max {
			out = append(out, rec)
		}
	}
	return out
}

// Stats summarises every request.
func (r *Result) Stats() Stats { return stats(r.Records) }

// Window summarises the requests that started in [from, to).
func (r *Result) Window(from, to time.Time) Stats {
	var in []Record
	for _, rec := range r.Records {
		if !rec.Start.Before(from) && rec.Start.Before(to) {
			in = append(in, rec)
		}
	}
	return stats(in)
}

// Throughput is the number of OK requests a second over the run.
func (r *Result) Throughput() float64 {
	d := r.End.Sub(r.Start).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(len(r.Records)-r.Failed()) / d
}

// Summary is a multi-line human-readable report.
func (r *Result) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v over %v (%.0f ok/s), %d reconnects\n", r.Stats(), r.End.Sub(r.Start).Round(time.Millisecond), r.Throughput(), r.Reconnects())
	byClass := r.ByClass()
	for c := Class(0); c < numClasses; c++ {
		if byClass[c] > 0 {
			fmt.Fprintf(&b, "  %-16s %d\n", c, byClass[c])
		}
	}
	byPID := r.ByPID()
	pids := make([]int, 0, len(byPID))
	for pid := range byPID {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	for _, pid := range pids {
		fmt.Fprintf(&b, "  pid %-12d %d\n", pid, byPID[pid])
	}
	for _, rec := range r.Errors(5) {
		fmt.Fprintf(&b, "  error at +%v: %v: %v\n", rec.Start.Sub(r.Start).Round(time.Millisecond), rec.Class, rec.Err)
	}
	return b.String()
}

func (r *Result) sorted() []Record {
	recs := append([]Record(nil), r.Records...)
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].Start.Before(recs[j].Start) })
	return recs
}

func stats(recs []Record) Stats {
	s := Stats{Requests: len(recs)}
	lat := make([]time.Duration, 0, len(recs))
	var sum time.Duration
	for _, rec := range recs {
		if rec.Class != OK {
			s.Failed++
			continue
		}
		lat = append(lat, rec.Latency)
		sum += rec.Latency
	}
	if len(lat) == 0 {
		return s
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	s.P50 = percentile(lat, 50)
	s.P99 = percentile(lat, 99)
	s.Max = lat[len(lat)-1]
	s.Mean = sum / time.Duration(len(lat))
	return s
}

// percentile is the nearest-rank percentile of sorted latencies.
func percentile(sorted []time.Duration, p int) time.Duration {
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}
