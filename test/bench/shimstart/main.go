// Command shimstart measures what the exec shim costs per worker start: the
// supervisor starts every worker through its own binary in shim mode
// (`supervisor __supervisor-exec-worker WORKER`), which sets LISTEN_PID
// and execs the worker. Built with cgo, the shim does that in a C
// constructor before the Go runtime starts; built without (CGO_ENABLED=0),
// the Go runtime and every package's initialisation run first, so whatever
// the supervisor links in costs every worker start.
//
//	go run ./test/bench/shimstart                       # the working tree, three ways; 3 rounds × 300 starts each
//	go run ./test/bench/shimstart --baseline 4ecb5b4    # and the pure-Go build of an earlier commit
//
// The builds of the working tree: cgo (dynamic, as a plain go build here),
// cgo linked statically (as the Containerfile builds it) and pure Go
// (CGO_ENABLED=0). Each start is timed from fork to the exit of /bin/true,
// which the shim execs; the builds are alternated round by round, and the
// median of the rounds' means is printed, with a bare fork and exec of
// /bin/true for reference.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/procswitch/supervisor/internal/proc"
	"github.com/procswitch/supervisor/test/bench/benchbuild"
	"github.com/procswitch/supervisor/test/procwatch"
)

type variant struct {
	name, bin string
	means     []time.Duration
}

func main() {
	runs := flag.Int("runs", 300, "starts per build and round")
	rounds := flag.Int("rounds", 3, "rounds, the builds alternated")
	baseline := flag.String("baseline", "", "also measure the pure-Go build of git revision `REV`")
	flag.Parse()
	if *runs < 1 || *rounds < 1 || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "shimstart: want --runs >= 1, --rounds >= 1 and no arguments")
		os.Exit(2)
	}
	if err := run(*runs, *rounds, *baseline); err != nil {
		fmt.Fprintln(os.Stderr, "shimstart:", err)
		os.Exit(1)
	}
}

func run(runs, rounds int, baseline string) error {
	dir, err := os.MkdirTemp("", "shimstart-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	root, err := procwatch.ModuleRoot(benchbuild.ModulePath)
	if err != nil {
		return err
	}
	builds := []struct {
		name, cgo string
		args      []string
	}{
		{"cgo", "1", nil},
		{"cgo, static (Containerfile)", "1", []string{"-tags", "netgo,osusergo", "-ldflags=-linkmode external -extldflags -static"}},
		{"pure Go (CGO_ENABLED=0)", "0", nil},
	}
	var vs []*variant
	for i, b := range builds {
		out := filepath.Join(dir, fmt.Sprint("supervisor-", i))
		cmd := exec.Command(procwatch.GoTool(), append(append([]string{"build", "-o", out}, b.args...), "./cmd/supervisor")...)
		cmd.Dir, cmd.Env = root, append(os.Environ(), "CGO_ENABLED="+b.cgo)
		if o, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("building %s: %v\n%s", b.name, err, o)
		}
		vs = append(vs, &variant{name: b.name, bin: out})
	}
	if baseline != "" {
		out := filepath.Join(dir, "supervisor-baseline")
		os.Setenv("CGO_ENABLED", "0")
		src, err := benchbuild.Install(context.Background(), baseline, 5*time.Minute,
			benchbuild.Binary{Build: procwatch.Build{Out: out, Pkg: "./cmd/supervisor"}})
		os.Unsetenv("CGO_ENABLED")
		if err != nil {
			return err
		}
		vs = append(vs, &variant{name: "pure Go, " + src.String(), bin: out})
	}
	truth, err := exec.LookPath("true")
	if err != nil {
		return err
	}
	bare := &variant{name: "bare fork and exec of true(1)"}
	fmt.Printf("shimstart: %d rounds × %d starts per build, alternated; load average %s\n", rounds, runs, procwatch.LoadAvg())
	for range rounds {
		for _, v := range append(vs, bare) {
			argv := []string{truth}
			path := truth
			if v.bin != "" {
				path, argv = proc.ShimCommand(v.bin, argv)
			}
			began := time.Now()
			for range runs {
				cmd := exec.Command(path, argv[1:]...)
				cmd.Args = argv
				if err := cmd.Run(); err != nil {
					return fmt.Errorf("%s: %v", v.name, err)
				}
			}
			v.means = append(v.means, time.Since(began)/time.Duration(runs))
		}
	}
	fmt.Println()
	fmt.Printf("  %-60s %s\n", "build", "per start, median of the rounds' means (each round's)")
	for _, v := range append(vs, bare) {
		s := slices.Clone(v.means)
		slices.Sort(s)
		fmt.Printf("  %-60s %8.2f ms  %v\n", v.name, ms(s[len(s)/2]), roundMS(v.means))
	}
	fmt.Printf("load average at the end: %s\n", procwatch.LoadAvg())
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func roundMS(ds []time.Duration) []string {
	var out []string
	for _, d := range ds {
		out = append(out, fmt.Sprintf("%.2f", ms(d)))
	}
	return out
}
