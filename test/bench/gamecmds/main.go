// Command gamecmds measures the game's commands per second with many
// connected clients, for two builds in one run: this working tree's and
// that of a git revision (--baseline, by default the last commit whose
// rules were Go code, before they moved to Lua).
//
//	go run ./test/bench/gamecmds [--clients 1000] [--rounds 5] [--duration 3s] [--baseline REV]
//
// Each round starts each build's game on its own (no supervisor, no
// snapshot, no autosave) on a loopback port, logs in --clients clients,
// and has each send WORK, STATUS and BUY 1002 in turn, one command at a time
// (each waits for its reply), for --duration. A round's figure is the
// commands answered in that window divided by its length. The builds
// alternate which goes first in each round, so that neither always runs
// on a machine warmed (or tired) by the other. It prints every round, then
// the median of each build side by side and their ratio.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/procswitch/supervisor/test/bench/benchbuild"
	"github.com/procswitch/supervisor/test/procwatch"
)

// goRules is the last commit whose game rules are Go code.
const goRules = "7f858fd"

const (
	buildTimeout = 5 * time.Minute  // each go build
	startBound   = 30 * time.Second // a game's start, and its stop
	ioBound      = 30 * time.Second // a client's connect, login, and each command
)

type options struct {
	clients  int
	rounds   int
	duration time.Duration
	baseline string
}

func main() {
	var o options
	flag.IntVar(&o.clients, "clients", 1000, "connected clients, each sending one command at a time")
	flag.IntVar(&o.rounds, "rounds", 5, "rounds; each measures both builds, alternated")
	flag.DurationVar(&o.duration, "duration", 3*time.Second, "measuring window of each build in each round")
	flag.StringVar(&o.baseline, "baseline", goRules, "git `REV` of the build to compare with (default: the last one with the rules in Go)")
	flag.Parse()
	if o.clients < 1 || o.rounds < 1 || o.duration <= 0 {
		fmt.Fprintln(os.Stderr, "gamecmds: --clients, --rounds and --duration must be positive")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "gamecmds:", err)
		os.Exit(1)
	}
}

// build is one game binary under test.
type build struct {
	name string // "lua" (this tree) or "go" (the baseline)
	bin  string
	src  benchbuild.Source
	runs []float64 // commands per second, one per round
}

func run(o options) error {
	dir, err := os.MkdirTemp("", "gamecmds-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	builds := []*build{
		{name: "go (" + o.baseline + ")", bin: filepath.Join(dir, "game-baseline")},
		{name: "lua (this tree)", bin: filepath.Join(dir, "game-new")},
	}
	ctx := context.Background()
	for i, rev := range []string{o.baseline, ""} {
		b := builds[i]
		b.src, err = benchbuild.Install(ctx, rev, buildTimeout, benchbuild.Binary{
			Build: procwatch.Build{Out: b.bin, Pkg: "./example-game/gameserver", LDFlags: "-X main.version=bench"}})
		if err != nil {
			return err
		}
		fmt.Printf("%-16s %s\n", b.name+":", b.src)
	}
	fmt.Printf("%d clients, WORK/STATUS/BUY 1002 in turn, one command at a time each; %v per build per round, %d rounds\n",
		o.clients, o.duration, o.rounds)
	for round := range o.rounds {
		order := builds
		if round%2 == 1 {
			order = []*build{builds[1], builds[0]}
		}
		for _, b := range order {
			rate, err := measure(b.bin, o)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", round+1, b.name, err)
			}
			b.runs = append(b.runs, rate)
			fmt.Printf("round %d  %-22s %10.0f commands/s\n", round+1, b.name, rate)
		}
	}
	base, lua := median(builds[0].runs), median(builds[1].runs)
	fmt.Printf("\nmedian of %d rounds, %d clients:\n", o.rounds, o.clients)
	fmt.Printf("  %-22s %10.0f commands/s\n", builds[0].name, base)
	fmt.Printf("  %-22s %10.0f commands/s\n", builds[1].name, lua)
	fmt.Printf("  lua/go                 %10.2fx\n", lua/base)
	return nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

var servingRe = regexp.MustCompile(`: serving on (\S+) \(`)

// measure starts the game at bin, connects the clients, and returns the
// commands per second they got answered during o.duration.
func measure(bin string, o options) (float64, error) {
	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--autosave", "0", "--stock", "1000000000000")
	p, err := procwatch.Start("game", cmd)
	if err != nil {
		return 0, err
	}
	defer p.Stop(startBound)
	e, _, err := p.Find(0, startBound, "serving on", func(e procwatch.Entry) bool { return servingRe.MatchString(e.Raw) })
	if err != nil {
		return 0, err
	}
	addr := servingRe.FindStringSubmatch(e.Raw)[1]

	var done atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, o.clients)
	ready := make(chan struct{}, o.clients)
	for i := range o.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := client(addr, fmt.Sprintf("bench%d", i), ready, stop, &done); err != nil {
				errs <- err
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	for range o.clients { // every client logged in, and playing
		select {
		case <-ready:
		case err := <-errs:
			return 0, err
		case <-time.After(ioBound):
			return 0, errors.New("clients did not log in in time")
		}
	}
	before, began := done.Load(), time.Now()
	select {
	case err := <-errs:
		return 0, err
	case <-time.After(o.duration):
	}
	after, took := done.Load(), time.Since(began)
	return float64(after-before) / took.Seconds(), nil
}

// client logs in as id, says ready, and plays until stop is closed,
// counting each command answered in done.
func client(addr, id string, ready chan<- struct{}, stop <-chan struct{}, done *atomic.Int64) error {
	c, err := net.DialTimeout("tcp", addr, ioBound)
	if err != nil {
		return err
	}
	defer c.Close()
	r := bufio.NewReader(c)
	do := func(cmd []byte) error {
		c.SetDeadline(time.Now().Add(ioBound))
		if _, err := c.Write(cmd); err != nil {
			return err
		}
		reply, err := r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(reply) < 3 || string(reply[:3]) != "OK " {
			return fmt.Errorf("%s: %q: %q", id, cmd, reply)
		}
		return nil
	}
	if err := do([]byte("LOGIN " + id + "\n")); err != nil {
		return err
	}
	ready <- struct{}{}
	mix := [][]byte{[]byte("WORK\n"), []byte("STATUS\n"), []byte("BUY 1002\n")}
	for i := 0; ; i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		if err := do(mix[i%len(mix)]); err != nil {
			select {
			case <-stop: // the game stopped first
				return nil
			default:
			}
			return err
		}
		done.Add(1)
	}
}
