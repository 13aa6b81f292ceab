// Command servehttp measures what handoff.ServeHTTP costs: it serves one
// trivial handler (pathfind's /healthz in miniature) two ways, each in a
// server process of its own, (a) with http.Server.Serve(ln) and (b) with
// handoff.ServeHTTP, and loads each over loopback with a Go load generator,
// alternating a and b round by round. It reports the medians of req/s, the
// median of the rounds' own b/a ratios, and the server's CPU per request.
//
//	go run ./test/bench/servehttp                       # 5 rounds × 5 s per variant and mode, about 2 minutes
//	go run ./test/bench/servehttp --rounds 3 --duration 2s --profile /tmp/prof
//
// Two modes: keep-alive (each client keeps one connection) and a new
// connection per request, since ServeHTTP does per-connection bookkeeping.
// The program re-executes itself as the server child.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/procswitch/supervisor/test/procwatch"
)

type options struct {
	rounds      int
	duration    time.Duration
	warmup      time.Duration
	clients     int
	modes       []string
	serverProcs int
	profile     string
	together    bool
	same        bool
}

// Bounds on the child's start and exit.
const (
	startBound = 10 * time.Second
	exitBound  = drainBound + 5*time.Second
)

func main() {
	if v := os.Getenv(childEnv); v != "" {
		if err := serveChild(v); err != nil {
			fmt.Fprintln(os.Stderr, "servehttp child:", err)
			os.Exit(1)
		}
		return
	}
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "servehttp:", err)
		os.Exit(2)
	}
	if err := run(o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "servehttp:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("servehttp", flag.ContinueOnError)
	fs.IntVar(&o.rounds, "rounds", 5, "rounds; each runs both variants, in alternating order")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "measured load per variant and round")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "load before the measurement starts, per run")
	fs.IntVar(&o.clients, "clients", 4, "client goroutines, each one request at a time")
	modes := fs.String("modes", "keepalive,newconn", "comma-separated: keepalive, newconn (a new connection per request)")
	fs.IntVar(&o.serverProcs, "server-procs", 0, "GOMAXPROCS of the server child (0: Go's default)")
	fs.BoolVar(&o.together, "together", false, "load both variants at the same time in each round, each with its own clients,\nso that both see the same background load")
	fs.BoolVar(&o.same, "same", false, "a control: serve b with http.Server.Serve too, so that b/a shows the method's own noise")
	fs.StringVar(&o.profile, "profile", "", "write the server's CPU profile of each variant's first round to this `directory`")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.modes = strings.Split(*modes, ",")
	for _, m := range o.modes {
		if m != "keepalive" && m != "newconn" {
			return o, fmt.Errorf("--modes: %q is neither keepalive nor newconn", m)
		}
	}
	if o.rounds < 1 || o.clients < 1 || o.duration <= 0 || o.warmup < 0 {
		return o, fmt.Errorf("--rounds and --clients must be at least 1, --duration positive")
	}
	return o, nil
}

// result is one run: one variant, one mode, one round.
type result struct {
	rps       float64       // answered requests a second, in the measured window
	requests  uint64        // answered over the whole run, warm-up included
	failed    uint64        // failed requests over the whole run
	cpuPerReq time.Duration // the server's user+system CPU over requests
}

func run(o options, out io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "servehttp: (a) http.Server.Serve against (b) handoff.ServeHTTP, the same handler\n")
	how := "a and b alternated"
	if o.together {
		how = "a and b at the same time, each with its own clients"
	}
	fmt.Fprintf(out, "%d rounds × %v per variant (after %v of warm-up), %d clients over loopback, %s\n",
		o.rounds, o.duration, o.warmup, o.clients, how)
	fmt.Fprintf(out, "machine: %d CPUs (%s), %s; load average at the start %s\n\n", runtime.NumCPU(), cpuModel(), runtime.Version(), procwatch.LoadAvg())
	results := map[string]map[string][]result{} // mode → variant → rounds
	for _, mode := range o.modes {
		results[mode] = map[string][]result{}
		for r := range o.rounds {
			order := []string{bare, servehttp}
			if r%2 == 1 {
				slices.Reverse(order)
			}
			profiles := make([]string, len(order))
			for k, v := range order {
				if o.profile != "" && r == 0 {
					profiles[k] = filepath.Join(o.profile, mode+"-"+v+".pprof")
				}
			}
			res, err := measure(exe, order, mode == "keepalive", o, profiles)
			if err != nil {
				return fmt.Errorf("%s, round %d: %w", mode, r+1, err)
			}
			for k, v := range order {
				results[mode][v] = append(results[mode][v], res[k])
			}
			a, b := results[mode][bare][r], results[mode][servehttp][r]
			fmt.Fprintf(out, "  %-9s round %d: a %8.0f req/s, b %8.0f req/s, b/a %.3f (load average %s)\n",
				mode, r+1, a.rps, b.rps, b.rps/a.rps, procwatch.LoadAvg())
		}
	}
	report(out, o, results)
	return nil
}

// child is a server child under load.
type child struct {
	cmd    *exec.Cmd
	load   *load
	stop   func() // stops the load
	n0, n1 uint64 // answered when the measurement started and ended
	t0, t1 time.Time
}

// startChild starts a server child for variant and its load.
func startChild(exe, variant string, keepAlive bool, o options, profile string) (*child, error) {
	if o.same {
		variant = bare
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"="+variant, profileEnv+"="+profile)
	if o.serverProcs > 0 {
		cmd.Env = append(cmd.Env, fmt.Sprintf("GOMAXPROCS=%d", o.serverProcs))
	}
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	addr, err := readAddr(stdout)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, err
	}
	c := &child{cmd: cmd, load: &load{addr: addr, keepAlive: keepAlive}}
	c.stop = c.load.run(o.clients)
	return c, nil
}

func (c *child) begin() { c.n0, c.t0 = c.load.done.Load(), time.Now() }
func (c *child) end()   { c.n1, c.t1 = c.load.done.Load(), time.Now() }

// finish stops the load and the child, and makes the result.
func (c *child) finish() (result, error) {
	c.stop()
	if err := stopChild(c.cmd); err != nil {
		return result{}, err
	}
	res := result{rps: float64(c.n1-c.n0) / c.t1.Sub(c.t0).Seconds(), requests: c.load.done.Load(), failed: c.load.failed.Load()}
	if res.failed > 0 {
		return res, fmt.Errorf("%d requests failed, the first: %v", res.failed, c.load.firstErr)
	}
	if res.requests > 0 {
		st := c.cmd.ProcessState
		res.cpuPerReq = (st.UserTime() + st.SystemTime()) / time.Duration(res.requests)
	}
	return res, nil
}

// measure runs the variants of one round: one after the other, or with
// --together at the same time, each with its own clients.
func measure(exe string, variants []string, keepAlive bool, o options, profiles []string) ([]result, error) {
	var children []*child
	defer func() { // on an error, whatever still runs
		for _, c := range children {
			c.finish()
		}
	}()
	results := make([]result, len(variants))
	for i, v := range variants {
		c, err := startChild(exe, v, keepAlive, o, profiles[i])
		if err != nil {
			return nil, err
		}
		children = append(children, c)
		if o.together && i < len(variants)-1 {
			continue
		}
		time.Sleep(o.warmup)
		for _, c := range children {
			c.begin()
		}
		time.Sleep(o.duration)
		for _, c := range children {
			c.end()
		}
		first := i + 1 - len(children)
		for k, c := range children {
			if results[first+k], err = c.finish(); err != nil {
				children = children[k+1:]
				return nil, err
			}
		}
		children = nil
	}
	return results, nil
}

// readAddr reads the address line the child prints once it listens.
func readAddr(r io.Reader) (string, error) {
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(r).ReadString('\n')
		line <- strings.TrimSpace(s)
		io.Copy(io.Discard, r)
	}()
	select {
	case s := <-line:
		if s == "" {
			return "", fmt.Errorf("the server child exited before it listened")
		}
		return s, nil
	case <-time.After(startBound):
		return "", fmt.Errorf("the server child did not listen within %v", startBound)
	}
}

// stopChild sends SIGTERM (the drain, for ServeHTTP) and waits, at most
// exitBound, for the child to exit.
func stopChild(cmd *exec.Cmd) error {
	cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			return fmt.Errorf("server child: %w", err)
		}
		return nil
	case <-time.After(exitBound):
		cmd.Process.Kill()
		<-exited
		return fmt.Errorf("server child did not exit within %v of SIGTERM", exitBound)
	}
}

func report(out io.Writer, o options, results map[string]map[string][]result) {
	fmt.Fprintf(out, "\nload average at the end %s\n\n", procwatch.LoadAvg())
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\t(a) Serve req/s\t(b) ServeHTTP req/s\tb/a of medians\tmedian of rounds' b/a\tCPU/req a\tCPU/req b\tCPU b/a\t")
	for _, mode := range o.modes {
		a, b := results[mode][bare], results[mode][servehttp]
		ra, rb := median(a, func(r result) float64 { return r.rps }), median(b, func(r result) float64 { return r.rps })
		var ratios []float64
		for i := range a {
			ratios = append(ratios, b[i].rps/a[i].rps)
		}
		ca := median(a, func(r result) float64 { return float64(r.cpuPerReq) })
		cb := median(b, func(r result) float64 { return float64(r.cpuPerReq) })
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.3f\t%.3f\t%v\t%v\t%.3f\t\n", mode, ra, rb, rb/ra, medianOf(ratios),
			time.Duration(ca).Round(100*time.Nanosecond), time.Duration(cb).Round(100*time.Nanosecond), cb/ca)
	}
	tw.Flush()
	fmt.Fprintln(out, "\nb/a below 1: ServeHTTP serves fewer requests a second; CPU b/a above 1: it costs more CPU per request.")
	if o.same {
		fmt.Fprintln(out, "--same: b was http.Server.Serve too; how far b/a is from 1 is the method's noise.")
	}
	if o.profile != "" {
		fmt.Fprintf(out, "ServeHTTP's own share of the server's CPU (\"Showing nodes accounting for\"):\n  go tool pprof -top -focus=connTracker -ignore=main.handler %s\n",
			filepath.Join(o.profile, "MODE-servehttp.pprof"))
	}
}

func median(rs []result, f func(result) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	return medianOf(v)
}

func medianOf(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
