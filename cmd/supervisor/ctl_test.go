package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/procswitch/supervisor/internal/control"
	"github.com/procswitch/supervisor/internal/history"
	"github.com/procswitch/supervisor/internal/supervisor"
	"github.com/rs/zerolog"
)

// ctlRun runs `supervisor ctl args...` in process and returns its exit
// status and output.
func ctlRun(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = runCtl(args, &out, &errb)
	return code, out.String(), errb.String()
}

// oneLine fails the test unless s is exactly one line, and returns it.
func oneLine(t *testing.T, s string) string {
	t.Helper()
	if !strings.HasSuffix(s, "\n") || strings.Count(s, "\n") != 1 {
		t.Errorf("want exactly one line, got %q", s)
	}
	return strings.TrimSuffix(s, "\n")
}

func TestCtlUsageErrors(t *testing.T) {
	t.Setenv("RUNTIME_DIRECTORY", "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no command"},
		{[]string{"--control", "/run/x/control"}, "no command"},
		{[]string{"reboot"}, `unknown command "reboot"`},
		{[]string{"Status"}, `unknown command "Status"`},
		{[]string{"--bogus", "status"}, "unknown flag --bogus"},
		{[]string{"--json", "status"}, "unknown flag --json"},
		{[]string{"--control"}, "--control needs a PATH"},
		{[]string{"undo"}, `unknown command "undo": want status, upgrade, rollback, reload, history, metrics or stop`},
		{[]string{"status", "--wait"}, "--wait is not a flag of status"},
		{[]string{"upgrade", "--json"}, "--json is not a flag of upgrade"},
		{[]string{"stop", "--json"}, "--json is not a flag of stop"},
		{[]string{"status", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"upgrade", "--timeout"}, "flag needs an argument: -timeout"},
		{[]string{"upgrade", "--timeout", "soon"}, "invalid value"},
		{[]string{"upgrade", "--wait", "--timeout", "0"}, "--timeout must be positive"},
		{[]string{"upgrade", "--timeout", "-1s"}, "--timeout must be positive"},
		{[]string{"upgrade", "--wait=maybe"}, "invalid boolean value"},
		{[]string{"status", "now"}, `unexpected "now"`},
		{[]string{"upgrade", "--wait", "now"}, `unexpected "now"`},
		{[]string{"status", "stop"}, `unexpected "stop"`},
		{[]string{"upgrade", "--to", "2"}, "--to is not a flag of upgrade"},
		{[]string{"history", "--wait"}, "--wait is not a flag of history"},
		{[]string{"rollback", "--json"}, "--json is not a flag of rollback"},
		{[]string{"rollback", "-n", "3"}, "-n is not a flag of rollback"},
		{[]string{"rollback", "--to", "0"}, "--to 0: want a generation number"},
		{[]string{"rollback", "--to", "-2"}, "--to -2: want a generation number"},
		{[]string{"rollback", "--to", "two"}, "invalid value"},
		{[]string{"rollback", "--to"}, "flag needs an argument: -to"},
		{[]string{"rollback", "--wait", "--timeout", "0s"}, "--timeout must be positive"},
		{[]string{"history", "-n", "-1"}, "-n -1: want a number of records"},
		{[]string{"history", "-n", "many"}, "invalid value"},
		{[]string{"history", "all"}, `unexpected "all"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := ctlRun(tc.args...)
			if code != 2 || stdout != "" {
				t.Errorf("exit %d, stdout %q; want 2 and nothing", code, stdout)
			}
			line := oneLine(t, stderr)
			if !strings.HasPrefix(line, "supervisor ctl") || !strings.Contains(line, tc.want) {
				t.Errorf("error %q, want one from supervisor ctl saying %q", line, tc.want)
			}
		})
	}
}

func TestCtlHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"--control", "/x", "--help"}, {"status", "--help"}, {"upgrade", "-h"}} {
		code, stdout, stderr := ctlRun(args...)
		if code != 0 || stderr != "" || !strings.HasPrefix(stdout, "usage: supervisor ctl") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 0 and the usage on stdout", args, code, stdout, stderr)
		}
	}
}

func TestParseCtlArgs(t *testing.T) {
	for _, tc := range []struct {
		env        string // RUNTIME_DIRECTORY
		args       []string
		path, cmd  string
		rest       []string
		wantErrMsg string
	}{
		{"", []string{"status"}, "", "status", []string{}, ""},
		{"/run/app", []string{"status", "--json"}, "/run/app/control", "status", []string{"--json"}, ""},
		{"/run/app:/run/other", []string{"stop"}, "/run/app/control", "stop", []string{}, ""},
		{"/run/app", []string{"--control", "/tmp/c", "upgrade", "--wait"}, "/tmp/c", "upgrade", []string{"--wait"}, ""},
		{"", []string{"-control", "/tmp/c", "upgrade"}, "/tmp/c", "upgrade", []string{}, ""},
		{"", []string{"--control=/tmp/c", "status"}, "/tmp/c", "status", []string{}, ""},
		{"", []string{"-control=/tmp/c", "status", "--control", "/tmp/d"}, "/tmp/c", "status", []string{"--control", "/tmp/d"}, ""},
		{"", []string{"--control", "/a", "--control", "/b", "stop"}, "/b", "stop", []string{}, ""},
	} {
		t.Setenv("RUNTIME_DIRECTORY", tc.env)
		path, cmd, rest, err := parseCtlArgs(tc.args)
		if err != nil || path != tc.path || cmd != tc.cmd || strings.Join(rest, " ") != strings.Join(tc.rest, " ") {
			t.Errorf("RUNTIME_DIRECTORY=%q %q: %q %q %q %v; want %q %q %q", tc.env, tc.args, path, cmd, rest, err, tc.path, tc.cmd, tc.rest)
		}
	}
}

// fakeSupervisor is what the control server drives in these tests.
type fakeSupervisor struct {
	status    supervisor.Status
	upgrades  chan chan supervisor.Result
	rollbacks chan fakeRollback
	stops     chan struct{}
	reloaded  *supervisor.Result // what Reload answers; nil: nothing yet
}

// fakeRollback is one Rollback call: its argument and result channel.
type fakeRollback struct {
	to     int
	result chan supervisor.Result
}

func (f *fakeSupervisor) Rollback(to int) <-chan supervisor.Result {
	r := make(chan supervisor.Result, 1)
	f.rollbacks <- fakeRollback{to: to, result: r}
	return r
}

// Reload answers at once with f.reloaded, or never when it is nil.
func (f *fakeSupervisor) Reload(string) <-chan supervisor.Result {
	r := make(chan supervisor.Result, 1)
	if f.reloaded != nil {
		r <- *f.reloaded
	}
	return r
}

func (f *fakeSupervisor) Status() (supervisor.Status, bool) { return f.status, true }
func (f *fakeSupervisor) Stop()                             { f.stops <- struct{}{} }
func (f *fakeSupervisor) UpgradeBy(string) <-chan supervisor.Result {
	r := make(chan supervisor.Result, 1)
	f.upgrades <- r
	return r
}

// serveFake serves a control socket at dir/control on a fake supervisor.
func serveFake(t *testing.T, dir string) (string, *fakeSupervisor) {
	t.Helper()
	path := filepath.Join(dir, "control")
	ln, err := control.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 22, 5, 46, 8, 0, time.UTC)
	f := &fakeSupervisor{
		status: supervisor.Status{PID: 4242, Mode: "overlap", State: "serving",
			Current: &supervisor.GenStatus{Gen: 3, Phase: "serving", Binary: "/srv/app", Version: "0123456789ab", ReadyMS: 8.3,
				Workers: []supervisor.WorkerStatus{{PID: 4300, Ready: true, Status: "serving"}, {PID: 4301, Ready: true, Restarts: 2}}},
			LastUpgrade: &supervisor.UpgradeStatus{Gen: 4, OK: false, Kind: string(supervisor.KindExited),
				Reason: "upgrade to generation 4 failed: worker 77 exited before it was ready: exit status 1", At: at},
		},
		upgrades:  make(chan chan supervisor.Result, 8),
		rollbacks: make(chan fakeRollback, 8),
		stops:     make(chan struct{}, 8),
	}
	srv := control.NewServer(ln, path, f, zerolog.Nop())
	t.Cleanup(func() { srv.Close() })
	return path, f
}

// TestCtlTalksToSupervisor runs the commands against a control server on a
// fake supervisor: what they print, and their exit status.
func TestCtlTalksToSupervisor(t *testing.T) {
	dir := t.TempDir()
	path, f := serveFake(t, dir)
	t.Setenv("RUNTIME_DIRECTORY", "")

	code, stdout, stderr := ctlRun("--control", path, "status")
	if code != 0 || stderr != "" {
		t.Fatalf("status: exit %d, stderr %q", code, stderr)
	}
	for _, want := range []string{
		"supervisor pid 4242, mode overlap, state serving\n",
		"serving: generation 3 (serving), binary /srv/app, version 0123456789ab, ready in 8.3 ms\n",
		"  worker pid 4300 ready: serving\n",
		"  worker pid 4301 ready, 2 restarts\n",
		"last upgrade: FAILED at 2026-11-22T05:46:08Z: upgrade to generation 4 failed: worker 77 exited before it was ready: exit status 1 (exited-before-ready)\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("status does not say %q:\n%s", want, stdout)
		}
	}

	// --json: one line, the status as the server has it; the flag may follow
	// the command, and so may --control.
	code, stdout, stderr = ctlRun("status", "--json", "--control", path)
	var st supervisor.Status
	if code != 0 || stderr != "" || json.Unmarshal([]byte(oneLine(t, stdout)), &st) != nil ||
		st.PID != 4242 || st.State != "serving" || st.Current.Gen != 3 || len(st.Current.Workers) != 2 || st.LastUpgrade.OK ||
		st.LastUpgrade.Kind != string(supervisor.KindExited) {
		t.Errorf("status --json: exit %d, %q, stderr %q", code, stdout, stderr)
	}

	// The default path: $RUNTIME_DIRECTORY/control.
	t.Setenv("RUNTIME_DIRECTORY", dir)
	if code, _, stderr := ctlRun("status"); code != 0 {
		t.Errorf("status at $RUNTIME_DIRECTORY/control: exit %d, %q", code, stderr)
	}
	t.Setenv("RUNTIME_DIRECTORY", "")

	// upgrade --wait: exit 0 on success, 1 with the reason on failure.
	for _, tc := range []struct {
		result supervisor.Result
		code   int
		out    string
	}{
		{supervisor.Result{Gen: 5}, 0, "upgrade succeeded: generation 5 is ready and serving\n"},
		{supervisor.Result{Gen: 6, Err: &supervisor.UpgradeError{Gen: 6, Kind: supervisor.KindNotReady, Reason: "worker 99 not ready within 1s (ready probe: notify)"}}, 1,
			"supervisor ctl upgrade: upgrade to generation 6 failed: worker 99 not ready within 1s (ready probe: notify) (not-ready-in-time)\n"},
	} {
		done := make(chan struct{})
		var code int
		var stdout, stderr string
		go func() {
			defer close(done)
			code, stdout, stderr = ctlRun("--control", path, "upgrade", "--wait")
		}()
		(<-f.upgrades) <- tc.result
		<-done
		got := stdout
		if tc.code != 0 {
			got = stderr
			if stdout != "" {
				t.Errorf("failed upgrade --wait printed %q on stdout", stdout)
			}
		}
		if code != tc.code || got != tc.out {
			t.Errorf("upgrade --wait with %+v: exit %d, %q; want %d, %q", tc.result, code, got, tc.code, tc.out)
		}
	}

	// upgrade without --wait: exit 0 once asked.
	if code, stdout, _ := ctlRun("--control", path, "upgrade"); code != 0 || !strings.Contains(stdout, "upgrade requested") {
		t.Errorf("upgrade: exit %d, %q", code, stdout)
	}
	<-f.upgrades
	if code, stdout, _ := ctlRun("--control", path, "stop"); code != 0 || !strings.Contains(stdout, "stopping") || len(f.stops) != 1 {
		t.Errorf("stop: exit %d, %q, %d stops", code, stdout, len(f.stops))
	}
}

// TestCtlUnreachable: without a supervisor, one line and exit 1.
func TestCtlUnreachable(t *testing.T) {
	t.Setenv("RUNTIME_DIRECTORY", "")
	missing := filepath.Join(t.TempDir(), "control")
	for _, args := range [][]string{
		{"--control", missing, "status"},
		{"--control", missing, "upgrade", "--wait"},
		{"--control", missing, "stop"},
		{"status"}, // no path at all
	} {
		code, stdout, stderr := ctlRun(args...)
		line := oneLine(t, stderr)
		if code != 1 || stdout != "" || !strings.HasPrefix(line, "supervisor ctl") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 1 and one line", args, code, stdout, stderr)
		}
	}
}

// TestCtlRollback: rollback asks for the generation given, and exits as
// upgrade --wait does: 0 once the older binary serves, 1 with the reason
// and kind when it did not.
func TestCtlRollback(t *testing.T) {
	path, f := serveFake(t, t.TempDir())
	t.Setenv("RUNTIME_DIRECTORY", "")
	for _, tc := range []struct {
		args   []string
		to     int
		result supervisor.Result
		code   int
		out    string
	}{
		{[]string{"--wait"}, 0, supervisor.Result{Gen: 5}, 0, "rollback succeeded: generation 5 runs the older binary and serves\n"},
		{[]string{"--wait", "--to", "2", "--timeout", "1m"}, 2, supervisor.Result{Gen: 6}, 0, "rollback succeeded: generation 6 runs the older binary and serves\n"},
		{[]string{"--to=9", "--wait"}, 9, supervisor.Result{Err: &supervisor.UpgradeError{Kind: supervisor.KindRefused,
			Reason: "generation 9's binary is not held (held: generation 3, 2; --keep-versions keeps more)"}}, 1,
			"supervisor ctl rollback: generation 9's binary is not held (held: generation 3, 2; --keep-versions keeps more) (refused)\n"},
		{[]string{"--wait"}, 0, supervisor.Result{Gen: 7, Err: &supervisor.UpgradeError{Gen: 7, Kind: supervisor.KindExited, Reason: "worker 12 exited before it was ready: exit status 1"}}, 1,
			"supervisor ctl rollback: upgrade to generation 7 failed: worker 12 exited before it was ready: exit status 1 (exited-before-ready)\n"},
	} {
		done := make(chan struct{})
		var code int
		var stdout, stderr string
		go func() {
			defer close(done)
			code, stdout, stderr = ctlRun(append([]string{"--control", path, "rollback"}, tc.args...)...)
		}()
		rb := <-f.rollbacks
		rb.result <- tc.result
		<-done
		got, other := stdout, stderr
		if tc.code != 0 {
			got, other = stderr, stdout
		}
		if rb.to != tc.to || code != tc.code || got != tc.out || other != "" {
			t.Errorf("rollback %q: to %d, exit %d, %q (and %q); want to %d, exit %d, %q", tc.args, rb.to, code, got, other, tc.to, tc.code, tc.out)
		}
	}
	code, stdout, _ := ctlRun("--control", path, "rollback")
	if rb := <-f.rollbacks; code != 0 || rb.to != 0 || !strings.Contains(stdout, "rollback requested") {
		t.Errorf("rollback without --wait: exit %d, %q, to %d", code, stdout, rb.to)
	}
}

// TestCtlStatusVersions: status lists the held binaries and the end of
// probation.
func TestCtlStatusVersions(t *testing.T) {
	path, f := serveFake(t, t.TempDir())
	since := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	until := since.Add(time.Minute)
	f.status.State = "probation"
	f.status.ProbationUntil = &until
	f.status.Versions = []supervisor.VersionStatus{
		{Gen: 3, Binary: "/srv/app", Version: "0123456789ab", Current: true, Since: since},
		{Gen: 2, Binary: "/srv/app", Version: "ba9876543210", Since: since.Add(-time.Hour)},
		{Gen: 1, Binary: "/srv/app", Bad: true, Reason: "worker 44 crashed on probation", Since: since.Add(-2 * time.Hour)},
	}
	code, stdout, stderr := ctlRun("--control", path, "status")
	if code != 0 || stderr != "" {
		t.Fatalf("status: exit %d, %q", code, stderr)
	}
	for _, want := range []string{
		"state probation\n",
		"held versions (ctl rollback --to GEN):\n",
		"  generation 3: binary /srv/app, version 0123456789ab, since 2026-12-01T10:00:00Z, serving\n",
		"  generation 2: binary /srv/app, version ba9876543210, since 2026-12-01T09:00:00Z\n",
		"  generation 1: binary /srv/app, since 2026-12-01T08:00:00Z, BAD: worker 44 crashed on probation\n",
		"on probation until 2026-12-01T10:01:00Z: a crash or a hang of generation 3 rolls back by itself\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("status does not say %q:\n%s", want, stdout)
		}
	}
}

// TestCtlHistory: history prints one line per record, oldest first, or the
// JSON lines; -n picks how many; without a history, exit 1 and why.
func TestCtlHistory(t *testing.T) {
	path, _ := serveFake(t, t.TempDir())
	if code, stdout, stderr := ctlRun("--control", path, "history"); code != 1 || stdout != "" ||
		oneLine(t, stderr) != "supervisor ctl history: "+control.ErrNoHistory.Error() {
		t.Errorf("history without one: exit %d, %q, %q", code, stdout, stderr)
	}

	dir := t.TempDir()
	h, err := history.Open(dir, history.Options{})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	recs := []history.Record{
		{Time: at, Event: history.EventStart, Trigger: history.TriggerStart, Gen: 1, Version: "0123456789ab", Result: history.ResultOK, ReadyMS: 12.5, PID: 7},
		{Time: at.Add(time.Minute), Event: history.EventUpgrade, Trigger: history.TriggerSIGHUP, Gen: 2, FromGen: 1, Result: history.ResultFailed,
			Kind: "exited-before-ready", Reason: "worker 9 exited before it was ready: exit status 1", PID: 7},
		{Time: at.Add(2 * time.Minute), Event: history.EventRollback, Trigger: history.TriggerCtl, Gen: 3, FromGen: 2, Version: "ba9876543210",
			Result: history.ResultLost, Kind: "state-lost", ReadyMS: 8, BlackoutMS: 30.25, Lost: "40 s of play", PID: 7},
		{Time: at.Add(3 * time.Minute), Event: history.EventDrained, Gen: 2, Result: history.ResultOK, DrainMS: 100, PID: 7},
	}
	for _, r := range recs {
		h.Append(r)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	lpath := filepath.Join(t.TempDir(), "control")
	ln, err := control.Listen(lpath)
	if err != nil {
		t.Fatal(err)
	}
	srv := control.NewServer(ln, lpath, &fakeSupervisor{}, zerolog.Nop(), control.WithHistory(h))
	defer srv.Close()

	code, stdout, stderr := ctlRun("--control", lpath, "history")
	want := "2026-12-01T10:00:00.000Z start (start) gen 1 version 0123456789ab: ok, ready 12.5 ms\n" +
		"2026-12-01T10:01:00.000Z upgrade (sighup) gen 2 from 1: failed (exited-before-ready): worker 9 exited before it was ready: exit status 1\n" +
		"2026-12-01T10:02:00.000Z rollback (ctl) gen 3 from 2 version ba9876543210: lost (state-lost), ready 8.0 ms, blackout 30.2 ms; lost: 40 s of play\n" +
		"2026-12-01T10:03:00.000Z drained gen 2: ok, drain 100.0 ms\n"
	if code != 0 || stderr != "" || stdout != want {
		t.Errorf("history: exit %d, stderr %q:\n%s\nwant:\n%s", code, stderr, stdout, want)
	}
	code, stdout, stderr = ctlRun("--control", lpath, "history", "--json", "-n", "2")
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if code != 0 || stderr != "" || len(lines) != 2 {
		t.Fatalf("history --json -n 2: exit %d, %q, %q", code, stdout, stderr)
	}
	for i, line := range lines {
		var r history.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil || r != recs[2+i] {
			t.Errorf("history --json line %d: %s (%v), want %+v", i, line, err, recs[2+i])
		}
	}
	if code, stdout, _ := ctlRun("--control", lpath, "history", "-n", "0"); code != 0 || strings.Count(stdout, "\n") != len(recs) {
		t.Errorf("history -n 0: exit %d, %q; want every record", code, stdout)
	}
}

// TestCtlReload: reload --wait prints the result, and the reason and the
// kind when it failed; without --wait it returns once the workers were
// signalled, and a refusal, which comes at once, is still an error.
func TestCtlReload(t *testing.T) {
	path, f := serveFake(t, t.TempDir())
	t.Setenv("RUNTIME_DIRECTORY", "")
	for _, tc := range []struct {
		args   []string
		result *supervisor.Result
		code   int
		out    string
	}{
		{[]string{"--wait"}, &supervisor.Result{Gen: 3, Version: "scripts-42"}, 0,
			"reload succeeded: every worker of generation 3 reloaded (version scripts-42)\n"},
		{[]string{"--wait", "--timeout", "1m"}, &supervisor.Result{Gen: 3, Err: &supervisor.UpgradeError{Gen: 3, Kind: supervisor.KindReloadFailed,
			Reload: true, Reason: "worker 4300 could not reload: bad.lua:3: syntax error"}}, 1,
			"supervisor ctl reload: reload of generation 3 failed: worker 4300 could not reload: bad.lua:3: syntax error (reload-failed)\n"},
		{nil, &supervisor.Result{Gen: 3, Err: &supervisor.UpgradeError{Gen: 3, Kind: supervisor.KindRefused, Reload: true,
			Reason: "worker 4300 does not handle SIGHUP: it does not speak the reload contract (see the worker contract); nothing was signalled"}}, 1,
			"supervisor ctl reload: worker 4300 does not handle SIGHUP: it does not speak the reload contract (see the worker contract); nothing was signalled (refused)\n"},
		{nil, nil, 0, "reload requested: the workers were signalled (supervisor ctl status shows its result)\n"},
	} {
		f.reloaded = tc.result
		code, stdout, stderr := ctlRun(append([]string{"--control", path, "reload"}, tc.args...)...)
		got, other := stdout, stderr
		if tc.code != 0 {
			got, other = stderr, stdout
		}
		if code != tc.code || got != tc.out || other != "" {
			t.Errorf("reload %q: exit %d, %q (and %q); want exit %d, %q", tc.args, code, got, other, tc.code, tc.out)
		}
	}
	if code, _, stderr := ctlRun("--control", path, "reload", "--to", "2"); code != 2 || !strings.Contains(stderr, "--to is not a flag of reload") {
		t.Errorf("reload --to: exit %d, %q", code, stderr)
	}
}
