// Command switchbench measures the supervisor's graceful process switching
// with the pathfind example service: failed requests, latency and switch
// time across SIGHUP upgrades under load in both client modes, the
// throughput of the supervised service against the same worker run bare,
// and the supervisor's memory, fds and children across many upgrades. It
// prints each figure next to its target from the project's issue 2.
//
// Run it from the module root:
//
//	go run ./test/bench/switchbench            # the full benchmark, a few minutes
//	go run ./test/bench/switchbench --quick    # a short smoke run
//
// With --baseline REV it measures two builds in the same run, alternated
// within every phase: this working tree's and git revision REV's, built in a
// temporary git worktree; it prints each figure of both side by side with
// the ratio new/baseline:
//
//	go run ./test/bench/switchbench --baseline HEAD~1
//
// It builds the supervisor and pathfind itself (or takes prebuilt ones with
// --supervisor-bin and --pathfind-bin, and --baseline-supervisor-bin and
// --baseline-pathfind-bin for the baseline), starts every process it measures,
// and stops and reaps them all before it exits. It exits 0 when every phase
// finished, whatever the figures (3 with --fail-on-miss when a target was
// missed), 1 when setup failed or a phase could not finish, 2 on bad flags.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/procswitch/supervisor/test/loadgen"
	"github.com/procswitch/supervisor/test/procwatch"
)

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1 // setup failed, or a phase could not finish
	exitUsage = 2
	exitMiss  = 3 // with --fail-on-miss: a target was missed
)

// stopBound bounds the stop of any process we started.
const stopBound = 20 * time.Second

// env is what the phases share.
type env struct {
	opts     options
	bins     binaries // builds[0]'s; its dir holds every build's
	builds   []*build // this tree's, then the baseline's if any
	uris     []string
	problems []string // found on the way, such as workers that outlived their supervisor
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	opts, err := parseFlags(args)
	if err != nil {
		if err != errHelp {
			fmt.Fprintf(os.Stderr, "switchbench: %v\n", err)
			return exitUsage
		}
		return exitOK
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	e := &env{opts: opts}
	defer e.cleanup()
	rep := &report{Machine: describeMachine(), Options: opts.describe(), Command: "go run ./test/bench/switchbench " + strings.Join(args, " ")}
	printHeader(os.Stdout, rep)
	if err := e.setup(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "switchbench: setup failed: %v\n", err)
		return exitError
	}
	rep.Queries = len(e.uris)
	if len(e.builds) > 1 {
		rep.Build, rep.Source = e.builds[0].Tag, &e.builds[0].Src
		rep.Baseline = &results{Build: e.builds[1].Tag, Source: &e.builds[1].Src}
	}
	e.runPhases(ctx, rep)
	rep.Machine.LoadEnd = procwatch.LoadAvg()
	rep.Problems = e.problems
	rep.judge()
	if rep.Baseline != nil {
		printComparison(os.Stdout, rep)
	} else {
		printReport(os.Stdout, rep)
	}
	if opts.jsonFile != "" {
		if err := writeJSON(opts.jsonFile, rep); err != nil {
			fmt.Fprintf(os.Stderr, "switchbench: %v\n", err)
			return exitError
		}
	}
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "switchbench: interrupted")
		return exitError
	case rep.incomplete():
		fmt.Fprintln(os.Stderr, "switchbench: a phase could not finish; see its error above")
		return exitError
	case opts.failOnMiss && rep.missed():
		return exitMiss
	}
	return exitOK
}

// setup builds the binaries and draws the query mix against this tree's
// pathfind run on its own.
func (e *env) setup(ctx context.Context) error {
	// The workers of a supervisor that dies become ours to stop and reap, and
	// the supervisor starts with stdio only, so that its fd count is its own.
	if err := procwatch.BecomeSubreaper(); err != nil {
		return err
	}
	if err := procwatch.CloseInheritedFDs(); err != nil {
		return err
	}
	if e.opts.compare() {
		progressf("building the supervisor and pathfind, of this tree and of the baseline %s", e.opts.baseline)
	} else {
		progressf("building the supervisor and pathfind")
	}
	builds, err := buildAll(ctx, e.opts)
	if len(builds) > 0 {
		e.builds, e.bins = builds, builds[0].Bins
	}
	if err != nil {
		return err
	}
	if len(builds) > 1 {
		progressf("new: %s", builds[0].Src)
		progressf("baseline: %s", builds[1].Src)
	}
	bare, addr, size, err := startBare(e.bins.pathfind, e.opts.wait)
	if err != nil {
		return err
	}
	defer e.stopProc(bare)
	e.uris, err = makeQueries(addr, size, e.opts.queries, e.opts.seed, e.opts.requestTimeout)
	if err != nil {
		return err
	}
	progressf("%d queries on the %dx%d map", len(e.uris), size[0], size[1])
	return nil
}

func (e *env) runPhases(ctx context.Context, rep *report) {
	o := e.opts
	all := rep.all()
	if o.phases["upgrades"] {
		for _, mode := range []loadgen.Mode{loadgen.NewConn, loadgen.KeepAlive} {
			if ctx.Err() != nil {
				return
			}
			progressf("upgrades under load, %s: %d upgrades every %v%s", mode, o.upgrades, o.every, e.alternated(o.upgradeBatches(), "batches"))
			for i, m := range runUpgrades(ctx, e, mode) {
				all[i].Upgrades = append(all[i].Upgrades, m)
			}
		}
	}
	if o.phases["throughput"] && ctx.Err() == nil {
		progressf("throughput: %d rounds of %v, bare then supervised%s", o.rounds, o.round, e.alternated(o.rounds, "rounds"))
		for i, tp := range runThroughput(ctx, e) {
			all[i].Throughput = &tp
		}
	}
	if o.phases["flatness"] && ctx.Err() == nil {
		progressf("flatness: %d upgrades back to back%s", o.flatUpgrades, e.alternated((o.flatUpgrades+o.flatBatchSize()-1)/o.flatBatchSize(), "batches"))
		for i, fl := range runFlatness(ctx, e) {
			all[i].Flatness = &fl
		}
	}
}

// alternated says, when there are two builds, that a phase alternates them
// n times.
func (e *env) alternated(n int, what string) string {
	if len(e.builds) < 2 {
		return ""
	}
	return fmt.Sprintf(", each build in %d %s, alternated", n, what)
}

// stopSupervisor stops a supervisor, then checks that none of its workers
// outlived it.
func (e *env) stopSupervisor(s *supervisor) {
	e.stopProc(s.Proc)
	pids, err := procwatch.ReapOrphans(e.bins.dir, stopBound)
	if len(pids) > 0 {
		e.problem("workers %v outlived supervisor %d; killed them", pids, s.PID)
	}
	if err != nil {
		warnf("%v", err)
	}
	if !s.Log.WaitEOF(stopBound) {
		e.problem("the output of supervisor %d had not ended %v after it exited", s.PID, stopBound)
	} else if !strings.Contains(s.Log.Tail(3), `"message":"stopped"`) {
		e.problem("supervisor %d did not log \"stopped\" last (%v):\n%s", s.PID, s.Err(), s.Log.Tail(5))
	}
}

func (e *env) stopProc(p *procwatch.Proc) {
	if err := p.Stop(stopBound); err != nil {
		e.problem("%v", err)
	}
}

func (e *env) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	warnf("%s", msg)
	e.problems = append(e.problems, msg)
}

// cleanup stops whatever is still running, reaps orphans and removes the
// binaries.
func (e *env) cleanup() {
	if err := procwatch.StopAll(stopBound); err != nil {
		warnf("%v", err)
	}
	pids, err := procwatch.ReapOrphans(e.bins.dir, stopBound)
	if len(pids) > 0 {
		warnf("reaped leftover processes %v", pids)
	}
	if err != nil {
		warnf("%v", err)
	}
	if e.bins.dir != "" {
		os.RemoveAll(e.bins.dir)
	}
}

func warnf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "switchbench: warning: "+format+"\n", args...)
}

func progressf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "switchbench: %s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}
