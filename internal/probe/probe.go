// Package probe is the supervisor's HTTP listener for orchestrators and
// monitoring (--metrics-listen): /metrics in Prometheus' text format,
// /healthz for a liveness probe and /readyz for a readiness probe.
//
//	/healthz  200 while the supervisor's loop answers and its first
//	          generation has been ready (a startup probe waits for that);
//	          an upgrade, a handover's blackout, a
//	          worker's crash restart and a stop do not fail it, since a
//	          liveness probe that fails gets the whole pod restarted, and
//	          the supervisor restarts its workers itself
//	/readyz   200 while a worker of the current generation is ready, no
//	          handover blackout runs, and no stop was asked for: from the
//	          stop signal on it fails at once, before the drain begins
//	          (--stop-delay), so that the endpoints are removed before
//	          connections are refused
//
// A failing probe answers 503 with the reason in one line.
package probe

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/procswitch/supervisor/internal/metrics"
	"github.com/rs/zerolog"
)

// StatusBound bounds every read of the engine's status for a probe or a
// scrape: a loop that does not answer within it is taken as hung.
const StatusBound = 2 * time.Second

// Server serves the endpoints on a listener.
type Server struct {
	ln       net.Listener
	status   metrics.StatusFunc
	stopping atomic.Bool
	http     *http.Server
	done     chan struct{}
}

// Serve serves /metrics (m), /healthz and /readyz on ln, on its own
// goroutine, until Close. status is read at every request; it must return
// within a bound (metrics.Bounded, with StatusBound), so that a probe of a
// hung supervisor fails instead of hanging.
func Serve(ln net.Listener, status metrics.StatusFunc, m *metrics.Metrics, log zerolog.Logger) *Server {
	s := &Server{ln: ln, status: status, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 10 * time.Second,
		IdleTimeout: time.Minute}
	go func() {
		defer close(s.done)
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Str("addr", ln.Addr().String()).Msg("--metrics-listen: no longer serving")
		}
	}()
	return s
}

// Listener is the listener served, to pass to a successor supervisor.
func (s *Server) Listener() net.Listener { return s.ln }

// Stopping makes /readyz fail from now on: a stop was asked for.
func (s *Server) Stopping() { s.stopping.Store(true) }

// Close stops serving; the listener is closed (a successor serves on its
// own copy).
func (s *Server) Close() error {
	err := s.http.Close()
	<-s.done
	return err
}

// Health says why the supervisor is not alive, or nil.
func (s *Server) Health() error {
	st, ok := s.status()
	switch {
	case !ok:
		return fmt.Errorf("the supervisor's loop does not answer within %v (hung, or ending)", StatusBound)
	case st.State == "starting":
		return errors.New("starting: the first generation is not ready yet")
	case st.Current == nil && !st.Stopping:
		return fmt.Errorf("no generation serves (state %s)", st.State)
	}
	return nil
}

// Readiness says why the supervisor should get no new connections, or nil.
func (s *Server) Readiness() error {
	if s.stopping.Load() {
		return errors.New("stopping: the drain begins after --stop-delay")
	}
	st, ok := s.status()
	switch {
	case !ok:
		return fmt.Errorf("the supervisor's loop does not answer within %v (hung, or ending)", StatusBound)
	case st.Stopping:
		return errors.New("stopping: the workers drain")
	case st.Blackout:
		return errors.New("in a handover's blackout: the old worker saved, the new one is not ready yet")
	case !metrics.Serving(st):
		return fmt.Errorf("no worker of the current generation is ready (state %s)", st.State)
	}
	return nil
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) { answer(w, s.Health()) }

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) { answer(w, s.Readiness()) }

func answer(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, err)
		return
	}
	fmt.Fprintln(w, "ok")
}
