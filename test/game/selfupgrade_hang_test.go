package game

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/procswitch/supervisor/test/procwatch"
)

func init() {
	// successor-hangs stands in for a new supervisor build that starts and
	// then hangs before its first worker is initialised: it never answers.
	helpers["successor-hangs"] = func() int {
		fmt.Fprintf(os.Stderr, "helper[%d]: a successor supervisor that hangs\n", os.Getpid())
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
		<-c
		return 1
	}
}

// TestSelfUpgradeSuccessorHangs: SIGUSR2 in handover mode starts the new
// supervisor before the worker saves, so a new supervisor that hangs costs
// the players nothing: the worker serves all along, is never asked to save,
// and when the wait for the successor ends, the self-upgrade is reported as
// failed (kind successor-failed) and the same worker goes on, every bot connected,
// the ledger intact.
func TestSelfUpgradeSuccessorHangs(t *testing.T) {
	const nbots = 50
	dir := t.TempDir()
	self := filepath.Join(dir, "supervisor") // what SIGUSR2 runs again
	if err := procwatch.Install(self, bins.supervisor); err != nil {
		t.Fatal(err)
	}
	helperFile := filepath.Join(dir, "helper")
	if err := os.WriteFile(helperFile, []byte("successor-hangs"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startSupervised(t, supervisedOpts{
		bin:        bins.buggy,
		supervisor: self,
		// The supervisor ignores the variable; the test binary, run as its
		// successor, becomes the hanging helper. The wait for a successor in
		// handover mode is 10s + 2 x --ready-timeout + --drain-timeout +
		// --pass-timeout: 18s here.
		env:        []string{helperEnv + "=" + helperFile},
		flags:      []string{"--ready-timeout", "2s", "--drain-timeout", "2s", "--pass-timeout", "2s"},
		workerArgs: []string{"--autosave", "500ms", "--stock", fmt.Sprint(bigStock)},
	})
	_, pid := s.ready(t)
	ledger, _, probe, bots, tm := startPlaying(t, s.addr, nbots)

	if err := procwatch.Install(self, bins.helper); err != nil {
		t.Fatal(err)
	}
	s.signal(syscall.SIGUSR2)
	s.find2(t, "self-upgrade: starting the new supervisor", nil)
	// While the successor hangs, every bot is served: no blackout.
	tm.waitPast(t, tm.marks(), 10)
	failed := s.find2(t, "self-upgrade failed: this supervisor goes on serving", nil)
	if kind := failed.Str("kind"); kind != "successor-failed" || failed.Bool("rolled_back") {
		t.Errorf("self-upgrade failed with kind %q, rolled_back %v; want successor-failed, no rollback: %s", kind, failed.Bool("rolled_back"), failed.Raw)
	}
	for _, l := range s.Log.All() {
		if l.Msg() == "self-upgrade: the new supervisor's worker is initialised; worker saving for it" {
			t.Errorf("the worker was asked to save for a successor that never initialised: %s", l.Raw)
		}
	}
	tm.waitPast(t, tm.marks(), 5)
	if err := tm.halt(); err != nil {
		t.Fatal(err)
	}
	for _, b := range append(bots, probe) {
		b.c.expect(t, "STATUS", b.status(buggyVersion, pid))
	}
	ledger.check(t, probe.c)
}
