package game

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/procswitch/supervisor/handoff"
	"github.com/procswitch/supervisor/handoff/handover"
)

// The helper workers stand in for a new build of the game that fails once
// it has the previous worker's state: they take the handover (so the old
// worker saves and stores its connections) and then fail to restore.
//
// helperEnv names the helper, or the file that names it: the supervisor
// hands the same environment to every worker, so a test that installs the
// helper for one upgrade after another writes the name into that file first.
// The game ignores the variable.
var helpers = map[string]func() int{
	// restore-fails exits 1 right after GO, as a build that cannot read the
	// snapshot would.
	"restore-fails": func() int {
		return helperTakeHandover("restore fails", func() int { return 1 })
	},
	// restore-hangs never says READY=1: the ready timeout must end it.
	"restore-hangs": func() int {
		return helperTakeHandover("restore hangs", func() int {
			c := make(chan os.Signal, 1)
			signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
			<-c
			return 1
		})
	},
	// crash-on-data takes the handover, says READY=1 and exits 1 once a
	// handed-over connection sends data (probation_test.go).
	"crash-on-data": helperCrashOnData,
	// crash-on-command is crash-on-data that reads the command first.
	"crash-on-command": helperCrashOnCommand,
}

func runHelper(name string) int {
	if filepath.IsAbs(name) {
		b, err := os.ReadFile(name)
		if err != nil {
			fmt.Fprintf(os.Stderr, "helper: %v\n", err)
			return 2
		}
		name = strings.TrimSpace(string(b))
	}
	h, ok := helpers[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "helper: no helper %q\n", name)
		return 2
	}
	return h()
}

// helperTakeHandover waits for the handover, then runs then.
func helperTakeHandover(what string, then func() int) int {
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "helper[%d]: "+format+"\n", append([]any{os.Getpid()}, args...)...)
	}
	w, err := handoff.New()
	if err != nil {
		logf("%v", err)
		return 1
	}
	defer w.Close()
	if !handover.Enabled() {
		logf("not in handover mode")
		return 1
	}
	conns, err := handover.Await(context.Background(), w)
	if err != nil {
		logf("await handover: %v", err)
		return 1
	}
	logf("got %d connections and snapshot %s: %s", len(conns), handover.SnapshotPath(), what)
	return then()
}
