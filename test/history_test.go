package test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/procswitch/supervisor/internal/history"
)

// want is the part of a history record a test expects: what happened, and
// which supervisor wrote it.
type want struct {
	pid              int
	event, trigger   string
	gen, from        int
	result, kind     string
	version          string // "" when not checked
	reason, lostText bool   // a reason, or what was lost, is given
}

func (w want) String() string {
	return fmt.Sprintf("pid %d %s (%s) gen %d from %d: %s %s", w.pid, w.event, w.trigger, w.gen, w.from, w.result, w.kind)
}

func (w want) matches(r history.Record) bool {
	return r.PID == w.pid && r.Event == w.event && r.Trigger == w.trigger && r.Gen == w.gen && r.FromGen == w.from &&
		r.Result == w.result && r.Kind == w.kind && (w.version == "" || r.Version == w.version) &&
		(r.Reason != "") == w.reason && (r.Lost != "") == w.lostText && !r.Time.IsZero()
}

// TestHistory proves that with --state-dir every start, upgrade (by ctl and
// by SIGHUP, a failed one too), drain and self-upgrade is one whole JSON
// line in STATE_DIR/history.jsonl, in order, across a stop and a new
// supervisor on the same directory and a SIGUSR2 successor that writes to
// the same file; and that `ctl history` shows them, as JSON lines and one
// line each for people.
func TestHistory(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	control, pidFile := filepath.Join(dir, "control"), filepath.Join(dir, "pid")
	flags := goodFlags("--control", control, "--state-dir", state, "--pid-file", pidFile)
	v1, v2 := binaryVersion(t, pathfindV1), binaryVersion(t, pathfindV2)

	// The first supervisor: a start, an upgrade, a failed one, a stop.
	a := startSupervisor(t, supervisorConfig{binary: pathfindV1, flags: flags})
	a.waitReady(1)
	mark := a.Log.Len()
	a.install(pathfindV2, 0o755)
	ctlOK(t, control, "upgrade", "--wait")
	a.waitDrained(mark, 1)
	a.install(pathfindV2, 0o644)
	if u := a.hup(); u.OK || u.Gen != 3 {
		t.Fatalf("upgrade to a file that is not executable: %+v, want generation 3 failed", u)
	}
	ctlStop(t, a, control)
	wants := []want{
		{pid: a.PID, event: history.EventStart, trigger: history.TriggerStart, gen: 1, result: history.ResultOK, version: v1},
		{pid: a.PID, event: history.EventUpgrade, trigger: history.TriggerCtl, gen: 2, from: 1, result: history.ResultOK, version: v2},
		{pid: a.PID, event: history.EventDrained, gen: 1, result: history.ResultOK, version: v1},
		{pid: a.PID, event: history.EventUpgrade, trigger: history.TriggerSIGHUP, gen: 3, from: 2, result: history.ResultFailed,
			kind: "not-executable", reason: true},
		{pid: a.PID, event: history.EventDrained, gen: 2, result: history.ResultOK, version: v2},
	}
	checkHistory(t, readHistory(t, state), wants, 0)

	// A new supervisor on the same directory: a start, an upgrade, and a
	// self-upgrade, whose successor appends to the same file.
	b := startSupervisor(t, supervisorConfig{binary: pathfindV1, flags: flags})
	b.waitListening("http")
	first := b.waitReady(1)
	c := newChain(t, b, first, control, pidFile, nil)
	c.url = "http://" + b.waitListening("http") + "/healthz"
	mark = b.Log.Len()
	b.install(pathfindV2, 0o755)
	ctlOK(t, control, "upgrade", "--wait")
	b.waitDrained(mark, 1)
	c.cur = generation{gen: 2}
	c.last = 2
	c.usr2()
	succ := c.pid
	wants = append(wants,
		want{pid: b.PID, event: history.EventStart, trigger: history.TriggerStart, gen: 1, result: history.ResultOK, version: v1},
		want{pid: b.PID, event: history.EventUpgrade, trigger: history.TriggerCtl, gen: 2, from: 1, result: history.ResultOK, version: v2},
		want{pid: b.PID, event: history.EventDrained, gen: 1, result: history.ResultOK, version: v1},
		want{pid: succ, event: history.EventStart, trigger: history.TriggerSIGUSR2, gen: 3, from: 2, result: history.ResultOK, version: v2},
		want{pid: b.PID, event: history.EventSelfUpgrade, trigger: history.TriggerSIGUSR2, gen: 2, result: history.ResultOK, version: v2},
		want{pid: b.PID, event: history.EventDrained, gen: 2, result: history.ResultOK, version: v2},
	)

	// ctl history, from the successor: everything so far, as the file has it.
	r := ctlOK(t, control, "history", "--json", "-n", "0")
	var shown []history.Record
	for _, line := range strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n") {
		var rec history.Record
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("ctl history --json: %v: %q", err, line)
		}
		shown = append(shown, rec)
	}
	checkHistory(t, shown, wants, 5)
	text := ctlOK(t, control, "history").stdout
	if n := strings.Count(text, "\n"); n != len(wants) || !strings.Contains(text, "self-upgrade (sigusr2) gen 2 version "+v2+": ok") ||
		!strings.Contains(text, "upgrade (sighup) gen 3 from 2: failed (not-executable): ") {
		t.Errorf("ctl history: %d lines, want %d, with the self-upgrade and the failed upgrade:\n%s", n, len(wants), text)
	}
	if last := ctlOK(t, control, "history", "-n", "2").stdout; strings.Count(last, "\n") != 2 || !strings.HasSuffix(text, last) {
		t.Errorf("ctl history -n 2: %q, want the last 2 lines of\n%s", last, text)
	}

	c.stop()
	wants = append(wants, want{pid: succ, event: history.EventDrained, gen: 3, result: history.ResultOK, version: v2})
	checkHistory(t, readHistory(t, state), wants, 5)
}

// readHistory reads STATE_DIR/history.jsonl and fails the test unless
// every line is a whole record, the last one ended by its newline.
func readHistory(t *testing.T, state string) []history.Record {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, history.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 || b[len(b)-1] != '\n' {
		t.Errorf("%s does not end with a whole line: %q", history.FileName, b)
	}
	var recs []history.Record
	for _, line := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
		var r history.Record
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil || dec.More() {
			t.Errorf("torn or foreign line in %s: %q (%v)", history.FileName, line, err)
			continue
		}
		recs = append(recs, r)
	}
	return recs
}

// checkHistory checks that recs are the records wants, each once. Records
// up to index ordered (those of one supervisor at a time) are in exactly
// that order; after it, two supervisors may write at once, so only each
// one's records are in order.
func checkHistory(t *testing.T, recs []history.Record, wants []want, ordered int) {
	t.Helper()
	if len(recs) != len(wants) {
		t.Errorf("%d records, want %d", len(recs), len(wants))
	}
	got := make([]int, len(wants)) // the index of each want's record
	for i := range got {
		got[i] = -1
	}
	for i, r := range recs {
		matched := false
		for j, w := range wants {
			if got[j] < 0 && w.matches(r) {
				got[j], matched = i, true
				break
			}
		}
		if !matched {
			t.Errorf("record %d not expected: %+v", i, r)
		}
	}
	for j, w := range wants {
		switch {
		case got[j] < 0:
			t.Errorf("no record %v", w)
		case j < ordered && got[j] != j:
			t.Errorf("record %v is line %d, want %d", w, got[j]+1, j+1)
		}
		for k := range j {
			if wants[k].pid == w.pid && got[k] > got[j] {
				t.Errorf("record %v is before %v, which happened first", w, wants[k])
			}
		}
	}
}

// TestHistoryBadStateDir proves that a --state-dir that cannot hold the
// history stops the supervisor before any worker starts: one error line
// that names it, exit status 1.
func TestHistoryBadStateDir(t *testing.T) {
	needBinaries(t)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(file, "state")
	stderr, err := runBad(t, []string{"--log-format", "json", "--state-dir", bad, "--listen", "tcp://127.0.0.1:0", "--", pathfindV1})
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("exit: %v, want exit status 1", err)
	}
	lines := errorLines(stderr)
	if len(lines) != 1 || !strings.Contains(lines[0], "--state-dir "+bad) {
		t.Errorf("error lines %q, want one that names --state-dir %s", lines, bad)
	}
	if out := string(stderr); strings.Contains(out, "pathfind:") || strings.Contains(out, "generation ready") {
		t.Errorf("a worker started:\n%s", out)
	}
}
