// Command selfupgrade measures the supervisor's own upgrade (SIGUSR2) both
// ways, side by side in one run: --self-upgrade exec (re-exec in place: the
// same PID, the workers adopted) and --self-upgrade fork (a successor
// process through tableflip, which starts its own workers; the old one
// drains and exits). Sessions of each are alternated, each under load from
// clients that never retry (half keep-alive, half a new connection per
// request), pathfind as the worker.
//
//	go run ./test/bench/selfupgrade                 # 3 sessions × 5 SIGUSR2 per way, about a minute
//	go run ./test/bench/selfupgrade --rounds 1 --upgrades 3
//
// Per SIGUSR2: the time from the signal to the new supervisor serving
// (exec: its "the new image serves" line; fork: the successor's "takes
// over" line), and for fork also to the old supervisor's exit, before which
// no other SIGUSR2 is taken; whether the supervisor's PID and the workers'
// PIDs changed. Per session: the requests and the failed ones. It prints
// medians and p90 over all the SIGUSR2s of each way.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/procswitch/supervisor/test/bench/benchbuild"
	"github.com/procswitch/supervisor/test/loadgen"
	"github.com/procswitch/supervisor/test/procwatch"
)

type options struct {
	rounds, upgrades, clients int
	wait                      time.Duration
	keep                      bool
}

// one is one SIGUSR2's figures.
type one struct {
	serving, exited time.Duration // signal to the new supervisor serving; to the old one's exit (fork)
	samePID         bool
	sameWorkers     bool
}

// way is everything measured for one way.
type way struct {
	name              string
	ups               []one
	requests, failed  int
	sessions, aborted int
}

func main() {
	o := options{}
	flag.IntVar(&o.rounds, "rounds", 3, "sessions per way, the ways alternated")
	flag.IntVar(&o.upgrades, "upgrades", 5, "SIGUSR2s per session")
	flag.IntVar(&o.clients, "clients", 4, "load clients, half keep-alive, half a new connection per request")
	flag.DurationVar(&o.wait, "wait", 30*time.Second, "bound of every wait for a log line or a process")
	flag.BoolVar(&o.keep, "keep", false, "keep the working directory")
	flag.Parse()
	if flag.NArg() > 0 || o.rounds < 1 || o.upgrades < 1 || o.clients < 2 {
		fmt.Fprintln(os.Stderr, "selfupgrade: want --rounds >= 1, --upgrades >= 1, --clients >= 2 and no arguments (see --help)")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "selfupgrade:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if err := procwatch.BecomeSubreaper(); err != nil { // successors of the fork way are re-parented here
		return err
	}
	dir, err := os.MkdirTemp("", "selfupgrade-")
	if err != nil {
		return err
	}
	if !o.keep {
		defer os.RemoveAll(dir)
	}
	sup, worker := filepath.Join(dir, "supervisor-built"), filepath.Join(dir, "pathfind")
	src, err := benchbuild.Install(context.Background(), "", 5*time.Minute,
		benchbuild.Binary{Build: procwatch.Build{Out: sup, Pkg: "./cmd/supervisor"}},
		benchbuild.Binary{Build: procwatch.Build{Out: worker, Pkg: "./example-game/pathfind"}})
	if err != nil {
		return err
	}
	fmt.Printf("selfupgrade: %s; %d sessions × %d SIGUSR2 per way, alternated; %d clients; load average %s\n",
		src, o.rounds, o.upgrades, o.clients, procwatch.LoadAvg())
	ways := []*way{{name: "exec"}, {name: "fork"}}
	for r := range o.rounds {
		for _, w := range ways {
			if err := session(o, dir, sup, worker, w, r); err != nil {
				fmt.Printf("  %s session %d: %v\n", w.name, r+1, err)
				w.aborted++
			}
		}
	}
	report(ways)
	fmt.Printf("load average at the end: %s\n", procwatch.LoadAvg())
	return nil
}

// session runs one supervisor with --self-upgrade w.name through
// o.upgrades SIGUSR2s under load.
func session(o options, dir, built, worker string, w *way, round int) error {
	sdir := filepath.Join(dir, fmt.Sprintf("%s-%d", w.name, round))
	if err := os.MkdirAll(sdir, 0o755); err != nil {
		return err
	}
	bin := filepath.Join(sdir, "supervisor")
	if err := procwatch.Install(bin, built); err != nil {
		return err
	}
	cmd := exec.Command(bin, "--log-format", "json", "--listen", "http=tcp://127.0.0.1:0", "--ready-timeout", "10s",
		"--drain-timeout", "10s", "--self-upgrade", w.name, "--", worker)
	p, err := procwatch.Start("supervisor", cmd)
	if err != nil {
		return err
	}
	s := &procwatch.Supervisor{Proc: p}
	inCharge := p.PID
	defer func() {
		syscall.Kill(inCharge, syscall.SIGTERM)
		p.Log.WaitEOF(o.wait) // every supervisor of the session has exited
		p.Stop(o.wait)
		p.CloseOutput()
		procwatch.ReapOrphans("", o.wait)
	}()
	addr, err := s.WaitListening("http", o.wait)
	if err != nil {
		return err
	}
	pids, err := s.WaitReady(1, o.wait)
	if err != nil {
		return err
	}
	url := "http://" + addr + "/path?from=10,10&to=120,90"
	var loads []*loadgen.Run
	for _, mode := range []loadgen.Mode{loadgen.KeepAlive, loadgen.NewConn} {
		run, err := loadgen.Start(context.Background(), loadgen.Config{URL: url, Mode: mode, Clients: o.clients / 2, Timeout: 10 * time.Second})
		if err != nil {
			return err
		}
		defer run.Stop()
		loads = append(loads, run)
	}
	settle := func() {
		for _, run := range loads {
			run.Await(run.Len()+50, o.wait)
		}
	}
	w.sessions++
	for range o.upgrades {
		settle()
		mark := p.Log.Len()
		sent := time.Now()
		if err := syscall.Kill(inCharge, syscall.SIGUSR2); err != nil {
			return err
		}
		var u one
		if w.name == "exec" {
			e, _, err := p.Find(mark, o.wait, "the new image", func(e procwatch.Entry) bool {
				return e.Is("re-exec in place: the new image serves, its workers adopted") || e.Is("re-exec in place failed; this image serves on") || e.Is("re-exec in place refused: this image serves on")
			})
			if err != nil {
				return err
			}
			if !e.Is("re-exec in place: the new image serves, its workers adopted") {
				return fmt.Errorf("re-exec: %s", e.Raw)
			}
			u.serving = e.At.Sub(sent)
			u.samePID = true
			u.sameWorkers = slices.Equal(e.Ints("pids"), pids)
		} else {
			e, _, err := p.Find(mark, o.wait, "the successor", func(e procwatch.Entry) bool {
				return e.Is("self-upgrade: this supervisor is ready and takes over") || e.Is("self-upgrade failed: this supervisor goes on serving")
			})
			if err != nil {
				return err
			}
			if !e.Is("self-upgrade: this supervisor is ready and takes over") {
				return fmt.Errorf("self-upgrade: %s", e.Raw)
			}
			u.serving = e.At.Sub(sent)
			old := inCharge
			inCharge = e.Int("pid")
			if err := waitExit(old, o.wait); err != nil {
				return err
			}
			u.exited = time.Since(sent)
			// Its new workers: the successor's first generation.
			g, _, err := p.Find(mark, o.wait, "the successor's workers", func(e procwatch.Entry) bool { return e.Is("generation ready") })
			if err != nil {
				return err
			}
			u.sameWorkers = slices.Equal(g.Ints("pids"), pids)
			pids = g.Ints("pids")
		}
		w.ups = append(w.ups, u)
	}
	settle()
	for _, run := range loads {
		res := run.Stop()
		w.requests += len(res.Records)
		w.failed += res.Failed()
	}
	return nil
}

// waitExit waits up to d for process pid (ours, or re-parented to us) to
// exit.
func waitExit(pid int, d time.Duration) error {
	w, err := procwatch.WatchExit(pid)
	if err != nil {
		return err
	}
	defer w.Close()
	if !w.Wait(d) {
		return fmt.Errorf("supervisor %d did not exit within %v of its successor's takeover", pid, d)
	}
	return nil
}

func report(ways []*way) {
	fmt.Println()
	fmt.Println("SIGUSR2 both ways; ms, median (p90) over every SIGUSR2 of the way")
	fmt.Printf("  %-6s %9s %22s %26s %14s %16s %10s\n", "way", "SIGUSR2s", "signal to serving", "signal to the old's exit", "same PID", "same workers", "failed")
	for _, w := range ways {
		var serving, exited []time.Duration
		samePID, sameWorkers := 0, 0
		for _, u := range w.ups {
			serving = append(serving, u.serving)
			if u.exited > 0 {
				exited = append(exited, u.exited)
			}
			if u.samePID {
				samePID++
			}
			if u.sameWorkers {
				sameWorkers++
			}
		}
		fmt.Printf("  %-6s %9d %22s %26s %14s %16s %10s\n", w.name, len(w.ups), medianP90(serving), medianP90(exited),
			fmt.Sprintf("%d of %d", samePID, len(w.ups)), fmt.Sprintf("%d of %d", sameWorkers, len(w.ups)),
			fmt.Sprintf("%d of %d", w.failed, w.requests))
		if w.aborted > 0 {
			fmt.Printf("         %d of %d sessions aborted (above)\n", w.aborted, w.sessions+w.aborted)
		}
	}
	if len(ways) == 2 && len(ways[0].ups) > 0 && len(ways[1].ups) > 0 {
		a, b := median(durations(ways[0].ups)), median(durations(ways[1].ups))
		fmt.Printf("  signal to serving, exec / fork: %.2f\n", float64(a)/float64(b))
	}
}

func durations(ups []one) []time.Duration {
	var d []time.Duration
	for _, u := range ups {
		d = append(d, u.serving)
	}
	return d
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func medianP90(d []time.Duration) string {
	if len(d) == 0 {
		return "-"
	}
	s := slices.Clone(d)
	slices.Sort(s)
	ms := func(x time.Duration) string { return strconv.FormatFloat(float64(x.Microseconds())/1000, 'f', 1, 64) }
	return ms(s[len(s)/2]) + " (" + ms(s[(len(s)*9)/10]) + ")"
}
