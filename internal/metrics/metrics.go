// Package metrics is the supervisor in Prometheus' text format: what runs
// now (generations, workers, the live fd store, the binaries held for a
// rollback), read from the engine's Status at each scrape, and what
// happened since this supervisor started (upgrades, rollbacks, reloads,
// self-upgrades and crash restarts by result and kind; ready, blackout and
// drain times as histograms), counted from the records the engine makes
// for its upgrade history.
//
// Counters start at zero in every supervisor process, a successor of a
// self-upgrade included: Prometheus takes a counter that goes down for a
// restart. The upgrade history (package history) is the durable record.
package metrics

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/procswitch/supervisor/internal/history"
	"github.com/procswitch/supervisor/internal/supervisor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
)

// StatusFunc reads the engine's status; ok is false once its loop has
// ended. It must return within a bound (see Bounded).
type StatusFunc func() (st supervisor.Status, ok bool)

// Metrics holds the supervisor's metrics.
type Metrics struct {
	own  *prometheus.Registry // supervisor_*: Text, and part of Handler
	full prometheus.Gatherers // own, and the Go runtime's and the process's: Handler

	switches *prometheus.CounterVec
	crashes  prometheus.Counter
	ready    *prometheus.HistogramVec
	blackout *prometheus.HistogramVec
	drain    prometheus.Histogram
}

// New makes the metrics; status is read at every scrape.
func New(status StatusFunc) *Metrics {
	m := &Metrics{own: prometheus.NewRegistry()}
	m.switches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "supervisor_switches_total",
		Help: "Upgrades, rollbacks, reloads in place and self-upgrades finished since this supervisor started, by event (upgrade, rollback, reload, self-upgrade), trigger (sighup, ctl, probation, sigusr2), result (ok, failed, lost) and kind of failure.",
	}, []string{"event", "trigger", "result", "kind"})
	m.crashes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "supervisor_crash_restarts_total",
		Help: "Workers of the serving generation that died and were restarted (or replaced by their standby, --standby), since this supervisor started.",
	})
	m.ready = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "supervisor_ready_seconds",
		Help:    "From a generation's start to every worker ready (of a reload: the signal to the last answer; of a re-exec in place: the request to the new image serving), by event (start, upgrade, rollback, reload, self-upgrade).",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 14), // 10 ms to 82 s
	}, []string{"event"})
	m.blackout = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "supervisor_blackout_seconds",
		Help:    "Handover mode: from the old worker told to save to the new one's READY=1, when no worker serves; by event (upgrade, rollback).",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 15), // 1 ms to 16 s
	}, []string{"event"})
	m.drain = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "supervisor_drain_seconds",
		Help:    "From a generation told to drain to its last worker's exit.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 17), // 10 ms to 11 min
	})
	m.own.MustRegister(m.switches, m.crashes, m.ready, m.blackout, m.drain, &statusCollector{status: status})

	process := prometheus.NewRegistry()
	process.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.full = prometheus.Gatherers{m.own, process}
	return m
}

// Record counts a record of the upgrade history. It is the engine's
// Config.Record (with the history's own): it runs on the engine's loop and
// does not block.
func (m *Metrics) Record(r history.Record) {
	switch r.Event {
	case history.EventUpgrade, history.EventRollback, history.EventReload, history.EventSelfUpgrade:
		m.switches.WithLabelValues(r.Event, r.Trigger, r.Result, r.Kind).Inc()
	case history.EventCrash:
		m.crashes.Inc()
	case history.EventDrained:
		m.drain.Observe(r.DrainMS / 1000)
	}
	if r.ReadyMS > 0 && r.Result != history.ResultFailed {
		m.ready.WithLabelValues(r.Event).Observe(r.ReadyMS / 1000)
	}
	if r.BlackoutMS > 0 && r.Result != history.ResultFailed {
		m.blackout.WithLabelValues(r.Event).Observe(r.BlackoutMS / 1000)
	}
}

// Handler serves every metric: the supervisor's, the Go runtime's and the
// process's.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.full, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Text is the supervisor's own metrics (supervisor_*) in the text format,
// for node_exporter's textfile collector: that collector refuses the Go
// runtime's and the process's metrics, which it has itself.
func (m *Metrics) Text() ([]byte, error) {
	families, err := m.own.Gather()
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range families {
		if werr := enc.Encode(f); werr != nil {
			return nil, errors.Join(err, werr)
		}
	}
	return buf.Bytes(), err
}

// WriteText writes Text to w.
func (m *Metrics) WriteText(w io.Writer) error {
	b, err := m.Text()
	if len(b) > 0 {
		if _, werr := w.Write(b); werr != nil {
			return werr
		}
	}
	return err
}

// Bounded wraps status so that it returns within d: a loop that does not
// answer in time reads as ended (ok false), so a scrape or a probe of a
// hung supervisor fails instead of hanging. One read at a time goes to the
// loop; callers meanwhile wait for its answer, so a hung loop holds one
// goroutine, not one per scrape.
func Bounded(status StatusFunc, d time.Duration) StatusFunc {
	type read struct {
		done chan struct{} // closed once st and ok are set
		st   supervisor.Status
		ok   bool
	}
	var mu sync.Mutex
	var inflight *read // the read under way, if any
	return func() (supervisor.Status, bool) {
		mu.Lock()
		r := inflight
		if r == nil {
			r = &read{done: make(chan struct{})}
			inflight = r
			go func() {
				st, ok := status()
				mu.Lock()
				inflight = nil
				mu.Unlock()
				r.st, r.ok = st, ok
				close(r.done)
			}()
		}
		mu.Unlock()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-r.done:
			return r.st, r.ok
		case <-t.C:
			return supervisor.Status{}, false
		}
	}
}
