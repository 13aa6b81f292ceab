package metrics

import (
	"strconv"

	"github.com/procswitch/supervisor/internal/supervisor"
	"github.com/prometheus/client_golang/prometheus"
)

// statusCollector turns the engine's Status into gauges at each scrape.
type statusCollector struct {
	status StatusFunc
}

var (
	descUp = prometheus.NewDesc("supervisor_up",
		"1 while the supervisor's loop answers; 0 if it did not answer within the scrape's bound (hung, or ending).", nil, nil)
	descState = prometheus.NewDesc("supervisor_state",
		"The supervisor's state machine: 1 for the state it is in (serving, upgrading, saving, restoring, probation, reloading, rolling-back, self-upgrading, stopping, ...), 0 for the others.", []string{"state"}, nil)
	descServing = prometheus.NewDesc("supervisor_serving",
		"1 while a worker of the current generation is ready and no handover blackout runs: what /readyz says, a stop aside.", nil, nil)
	descGenerations = prometheus.NewDesc("supervisor_generations",
		"Generations with a worker alive, by role: current (serving), upgrading (started, not yet serving), draining.", []string{"role"}, nil)
	descWorkers = prometheus.NewDesc("supervisor_workers",
		"Worker processes, by role (current, upgrading, draining, standby) and whether they said READY=1 (for a standby: that it waits to take over).", []string{"role", "ready"}, nil)
	descCurrentGen = prometheus.NewDesc("supervisor_current_generation",
		"The serving generation's number (generations are numbered from 1, on across self-upgrades).", nil, nil)
	descCurrentStart = prometheus.NewDesc("supervisor_current_generation_start_time_seconds",
		"When the serving generation's first worker was started, in seconds since the Unix epoch.", nil, nil)
	descFDStore = prometheus.NewDesc("supervisor_fd_store_fds",
		"File descriptors the live fd store holds (FDSTORE=1 from the workers: their state regions and connections).", nil, nil)
	descFDStoreMax = prometheus.NewDesc("supervisor_fd_store_max_fds",
		"The live fd store's bound (--fd-store-max, lowered to fit RLIMIT_NOFILE).", nil, nil)
	descVersions = prometheus.NewDesc("supervisor_held_versions",
		"Worker binaries held open, the current one's and those `ctl rollback` can go back to; bad: rolled back from.", []string{"bad"}, nil)
	descStopping = prometheus.NewDesc("supervisor_stopping",
		"1 once a stop has begun (SIGTERM, SIGINT or ctl stop).", nil, nil)
)

// allStates are the state machine's states, so that each has a series.
var allStates = []string{"starting", "serving", "probation", "reloading", "upgrading", "saving", "restoring",
	"rolling-back", "self-upgrading", "retired", "stopping"}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descState, descServing, descGenerations, descWorkers, descCurrentGen,
		descCurrentStart, descFDStore, descFDStoreMax, descVersions, descStopping} {
		ch <- d
	}
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	st, ok := c.status()
	if !ok {
		gauge(descUp, 0)
		return
	}
	gauge(descUp, 1)
	for _, s := range allStates {
		gauge(descState, b2f(s == st.State), s)
	}
	gauge(descServing, b2f(Serving(st)))
	gauge(descStopping, b2f(st.Stopping))
	gauge(descFDStore, float64(st.FDStore))
	gauge(descFDStoreMax, float64(st.FDStoreMax))
	bad := 0
	for _, v := range st.Versions {
		if v.Bad {
			bad++
		}
	}
	gauge(descVersions, float64(len(st.Versions)-bad), "false")
	gauge(descVersions, float64(bad), "true")

	gens := map[string]int{"current": 0, "upgrading": 0, "draining": 0}
	workers := map[[2]string]int{}
	for _, role := range []string{"current", "upgrading", "draining", "standby"} {
		workers[[2]string{role, "true"}], workers[[2]string{role, "false"}] = 0, 0
	}
	count := func(role string, g *supervisor.GenStatus) {
		gens[role]++
		for _, w := range g.Workers {
			workers[[2]string{role, strconv.FormatBool(w.Ready)}]++
			if sb := w.Standby; sb != nil {
				workers[[2]string{"standby", strconv.FormatBool(sb.Waiting)}]++
			}
		}
	}
	if g := st.Current; g != nil {
		count("current", g)
		gauge(descCurrentGen, float64(g.Gen))
		if !g.Started.IsZero() {
			gauge(descCurrentStart, float64(g.Started.UnixNano())/1e9)
		}
	}
	if g := st.Upgrading; g != nil {
		count("upgrading", g)
	}
	for i := range st.Draining {
		count("draining", &st.Draining[i])
	}
	for role, n := range gens {
		gauge(descGenerations, float64(n), role)
	}
	for k, n := range workers {
		gauge(descWorkers, float64(n), k[0], k[1])
	}
}

// Serving says whether st serves: a current generation with a worker
// ready, and no handover blackout.
func Serving(st supervisor.Status) bool {
	if st.Current == nil || st.Blackout {
		return false
	}
	for _, w := range st.Current.Workers {
		if w.Ready {
			return true
		}
	}
	return false
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
