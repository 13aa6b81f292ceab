package main

import (
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/procswitch/supervisor/internal/history"
	"github.com/procswitch/supervisor/internal/metrics"
	"github.com/procswitch/supervisor/internal/probe"
	"github.com/procswitch/supervisor/internal/supervisor"
	"github.com/rs/zerolog"
)

// observability is the supervisor's metrics and, with --metrics-listen,
// its HTTP endpoints (package probe).
type observability struct {
	metrics *metrics.Metrics
	bounded metrics.StatusFunc     // status, within probe.StatusBound: for scrapes and probes
	sup     *supervisor.Supervisor // set once made; read only by scrapes and probes, which come after
	ln      net.Listener           // --metrics-listen's, ours or the predecessor's; nil for none
	server  *probe.Server          // serving ln; nil until started
	log     zerolog.Logger
}

// openObservability makes the metrics and takes the --metrics-listen
// socket: the predecessor's (a self-upgrade passes it on), else a new one.
// It does not serve yet: startServing does.
func openObservability(opts *options, inherited *inheritance, log zerolog.Logger) (*observability, error) {
	o := &observability{log: log}
	o.bounded = metrics.Bounded(o.status, probe.StatusBound) // a hung loop fails a scrape or a probe, not hangs it
	o.metrics = metrics.New(o.bounded)
	if ln := inherited.metricsListener(); ln != nil {
		o.ln = ln
	} else if opts.metricsListen != "" {
		ln, err := net.Listen("tcp", opts.metricsListen)
		if err != nil {
			return nil, fmt.Errorf("--metrics-listen %s: %w", opts.metricsListen, err)
		}
		o.ln = ln
	}
	if o.ln != nil {
		log.Info().Str("addr", o.ln.Addr().String()).Bool("inherited", inherited.metricsListener() != nil).
			Msg("serving /metrics, /healthz and /readyz")
	}
	return o, nil
}

func (o *observability) status() (supervisor.Status, bool) {
	if o.sup == nil {
		return supervisor.Status{}, false
	}
	return o.sup.Status()
}

// record is the engine's Config.Record: the metrics count every record,
// and the history, if any, keeps it.
func (o *observability) record(keep func(history.Record)) func(history.Record) {
	return func(r history.Record) {
		o.metrics.Record(r)
		if keep != nil {
			keep(r)
		}
	}
}

// startServing serves the endpoints, if there is a listener. A successor
// supervisor starts only once its first generation is ready: until then its
// predecessor answers the probes on the same socket, and a successor not
// yet ready would fail /readyz for a pod that serves.
func (o *observability) startServing() {
	if o.ln != nil && o.server == nil {
		o.server = probe.Serve(o.ln, o.bounded, o.metrics, o.log)
	}
}

// stopping makes /readyz fail from now on.
func (o *observability) stopping() {
	if o.server != nil {
		o.server.Stopping()
	}
}

// close stops serving (a successor serves on its own copy of the socket).
func (o *observability) close() {
	if o.server != nil {
		o.server.Close()
	} else if o.ln != nil {
		o.ln.Close()
	}
}

// stopper turns stop signals into the engine's stop: at once, or, with
// --stop-delay, after /readyz has failed for that long, so that the
// endpoint is removed before the drain refuses connections. A second
// signal stops at once. It runs on the signal goroutine.
type stopper struct {
	delay   time.Duration
	obs     *observability
	sup     *supervisor.Supervisor
	log     zerolog.Logger
	pending bool
	asked   atomic.Bool // a stop signal came: a re-exec must not take it away
}

// requested says whether a stop signal came.
func (s *stopper) requested() bool { return s.asked.Load() }

func (s *stopper) signal(sig os.Signal) {
	s.asked.Store(true)
	if s.delay <= 0 || s.pending {
		s.log.Info().Str("signal", sig.String()).Msg("stop requested")
		go s.sup.Stop() // never blocks the signal goroutine
		return
	}
	s.pending = true
	s.obs.stopping()
	s.log.Info().Str("signal", sig.String()).Dur("stop_delay", s.delay).
		Msg("stop requested: /readyz fails now; the drain begins after --stop-delay (another signal: at once)")
	time.AfterFunc(s.delay, func() {
		s.log.Info().Msg("--stop-delay passed: draining")
		s.sup.Stop()
	})
}
