package test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// pathfindV3 is a third build of pathfind (version v3), built once when a
// test first asks for it: the build at the path that a rollback must not run.
var pathfindV3 = sync.OnceValues(func() (string, error) {
	out := filepath.Join(binDir, "pathfind-v3")
	return out, goBuild(out, "./example-game/pathfind", "-ldflags", "-X main.version=v3")
})

// ctlVersion is one held binary in `ctl status --json`, as the README
// spells it.
type ctlVersion struct {
	Gen     int       `json:"gen"`
	Binary  string    `json:"binary"`
	Version string    `json:"version"`
	Current bool      `json:"current"`
	Bad     bool      `json:"bad"`
	Since   time.Time `json:"since"`
}

// ctlStatusVersions is the part of `ctl status --json` about rollbacks.
type ctlStatusVersions struct {
	Current        *ctlGen      `json:"current"`
	State          string       `json:"state"`
	Versions       []ctlVersion `json:"versions"`
	ProbationUntil *time.Time   `json:"probation_until"`
}

// versionsOf is `ctl status --json`'s current generation and held binaries.
func versionsOf(t *testing.T, control string) ctlStatusVersions {
	t.Helper()
	var st ctlStatusVersions
	r := ctlOK(t, control, "status", "--json")
	if err := jsonLine(r.stdout, &st); err != nil || st.Current == nil {
		t.Fatalf("status --json: %v: %q", err, r.stdout)
	}
	return st
}

// heldGens are the generations whose binaries st lists, newest first,
// with the version of each.
func heldGens(st ctlStatusVersions) map[int]string {
	m := map[int]string{}
	for _, v := range st.Versions {
		m[v.Gen] = v.Version
	}
	return m
}

// TestCtlRollback proves that `ctl rollback --wait` goes back to the binary
// that served before, through the file held open, after the path was
// overwritten by a third build that it never runs; that `--to GEN` goes to
// the binary of a held generation; that both lose no request under load;
// that a rollback to a generation not held exits 1 with a reason that
// lists the held ones; and that `ctl status` lists the held versions and
// the probation's end.
func TestCtlRollback(t *testing.T) {
	v3, err := pathfindV3()
	if err != nil {
		t.Fatal(err)
	}
	control := filepath.Join(t.TempDir(), "control")
	s := startSupervisor(t, supervisorConfig{binary: pathfindV1, flags: goodFlags("--control", control)})
	url := pathURL(t, s.waitListening("http"))
	s.waitReady(1)
	v1, v2 := binaryVersion(t, pathfindV1), binaryVersion(t, pathfindV2)
	loads := startBothModes(t, url)
	awaitAll(t, loads)

	s.install(pathfindV2, 0o755)
	mark := s.Log.Len()
	if r := ctlOK(t, control, "upgrade", "--wait"); !strings.Contains(r.stdout, "generation 2 is ready") {
		t.Fatalf("upgrade --wait: %v", r)
	}
	s.waitDrained(mark, 1) // until then, generation 1 may still answer
	checkServes(t, url, "v2")
	st := versionsOf(t, control)
	if held := heldGens(st); held[1] != v1 || held[2] != v2 || st.ProbationUntil == nil {
		t.Errorf("status after the upgrade: versions %+v, probation until %v; want generations 2 (%s) and 1 (%s), on probation",
			st.Versions, st.ProbationUntil, v2, v1)
	}
	text := ctlOK(t, control, "status").stdout
	for _, want := range []string{
		"held versions (ctl rollback --to GEN):\n",
		fmt.Sprintf("  generation 2: binary %s, version %s, since ", s.worker, v2),
		fmt.Sprintf("  generation 1: binary %s, version %s, since ", s.worker, v1),
		"on probation until ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("ctl status does not say %q:\n%s", want, text)
		}
	}

	// The path now names neither binary: the rollback runs the held v1.
	s.install(v3, 0o755)
	mark = s.Log.Len()
	r := ctlOK(t, control, "rollback", "--wait")
	if !strings.Contains(r.stdout, "rollback succeeded: generation 3") {
		t.Errorf("rollback --wait: %v", r)
	}
	s.waitDrained(mark, 2)
	checkServes(t, url, "v1")
	if st := versionsOf(t, control); st.Current.Gen != 3 || st.Current.Version != v1 {
		t.Errorf("after the rollback: generation %d version %s serves, want 3 and %s (v1)", st.Current.Gen, st.Current.Version, v1)
	}
	awaitAll(t, loads)

	// --to a held generation: v2's.
	mark = s.Log.Len()
	if r := ctlOK(t, control, "rollback", "--wait", "--to", "2"); !strings.Contains(r.stdout, "rollback succeeded: generation 4") {
		t.Errorf("rollback --to 2 --wait: %v", r)
	}
	s.waitDrained(mark, 3)
	checkServes(t, url, "v2")
	awaitAll(t, loads)

	// Refused: a generation not held, and the one serving.
	line := ctlFails(t, control, []string{"rollback", "--wait", "--to", "99"}, "generation 99", "not held", "held: generation", "(refused)")
	t.Logf("rollback --to 99: %s", line)
	ctlFails(t, control, []string{"rollback", "--wait", "--to", "4"}, "generation 4", "serving now", "(refused)")
	checkServes(t, url, "v2")
	// No --state-dir: no history, and ctl history says how to keep one.
	ctlFails(t, control, []string{"history"}, "keeps no history", "--state-dir")
	for i, run := range loads {
		noFailures(t, fmt.Sprint("load ", i), run.Stop())
	}
	ctlStop(t, s, control)
}

// jsonLine decodes out, which must be one JSON line, into v.
func jsonLine(out string, v any) error {
	if strings.Count(strings.TrimSuffix(out, "\n"), "\n") != 0 {
		return fmt.Errorf("not one line")
	}
	return json.Unmarshal([]byte(out), v)
}

// checkServes fails the test unless a request to url is answered by
// pathfind of version want.
func checkServes(t *testing.T, url, want string) {
	t.Helper()
	if rec := probe(t, url); rec.Version != want {
		t.Errorf("answered by pid %d version %q, want %s", rec.PID, rec.Version, want)
	}
}
