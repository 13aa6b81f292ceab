package test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/procswitch/supervisor/internal/history"
	engine "github.com/procswitch/supervisor/internal/supervisor"
	"github.com/procswitch/supervisor/test/procwatch"
)

// TestReload: `ctl reload` reloads every worker in place, with no process
// switch and no failed request under load: --wait answers once each said
// READY=1 with its VERSION=, which status shows per worker; a worker whose
// reload fails (RELOAD=failed) serves on with what it ran, and --wait says
// why (reload-failed); a worker that never answers makes it time out
// (reload-timeout), and is left serving; the history has every one.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	control, state, scripts := filepath.Join(dir, "control"), filepath.Join(dir, "state"), filepath.Join(dir, "scripts")
	writeScripts := func(content string) {
		t.Helper()
		if err := os.WriteFile(scripts, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeScripts("v1")
	s := startSupervisor(t, supervisorConfig{binary: helperBin,
		flags: goodFlags("--control", control, "--state-dir", state, "--workers", "2", "--reload-timeout", "3s"),
		env:   []string{helperEnv + "=reloader", scriptsEnv + "=" + scripts}})
	gen := s.waitReady(1)
	url := "http://" + s.waitListening("http") + "/"
	checkVersions(t, control, gen.pids, "v1")

	runs := startBothModes(t, url)
	for _, run := range runs {
		awaitLoad(t, run, 50)
	}
	for _, v := range []string{"v2", "v3"} {
		writeScripts(v)
		r := ctlOK(t, control, "reload", "--wait")
		if want := "reload succeeded: every worker of generation 1 reloaded (version " + v + ")\n"; r.stdout != want {
			t.Errorf("reload --wait said %q, want %q", r.stdout, want)
		}
		checkVersions(t, control, gen.pids, v)
		for _, run := range runs {
			awaitLoad(t, run, run.Len()+20) // served after the reload
		}
	}

	writeScripts("error: bad.lua:3: syntax error")
	ctlFails(t, control, []string{"reload", "--wait"}, "reload of generation 1 failed", "could not reload: bad.lua:3: syntax error",
		"serves on with what it ran before", "(reload-failed)")
	checkVersions(t, control, gen.pids, "v3")
	if got := probe(t, url).Version; got != "v3" {
		t.Errorf("after a failed reload the worker serves %q, want v3", got)
	}

	writeScripts("hang")
	ctlFails(t, control, []string{"reload", "--wait"}, "did not answer the reload within 3s", "RELOADING=1, but neither READY=1 nor RELOAD=failed",
		"(reload-timeout)")
	checkVersions(t, control, gen.pids, "v3")

	writeScripts("v4")
	mark := s.Log.Len()
	r := ctlOK(t, control, "reload") // without --wait: once the workers are signalled
	if !strings.Contains(r.stdout, "reload requested") {
		t.Errorf("reload said %q", r.stdout)
	}
	s.waitFor(mark, waitBound, "the reload's end", msg("reload finished", []string{"result"}, func(e procwatch.Entry) bool {
		return e.Str("version") == "v4"
	}))
	checkVersions(t, control, gen.pids, "v4")
	for _, run := range runs {
		awaitLoad(t, run, run.Len()+20)
	}
	for i, run := range runs {
		noFailures(t, []string{"new-conn", "keep-alive"}[i], run.Stop())
	}

	st := ctlOK(t, control, "status").stdout
	for _, want := range []string{"reported version v4", "last reload: generation 1 reloaded at"} {
		if !strings.Contains(st, want) {
			t.Errorf("status does not say %q:\n%s", want, st)
		}
	}
	var recs []history.Record
	for _, line := range strings.Split(strings.TrimSpace(ctlOK(t, control, "history", "--json", "-n", "0").stdout), "\n") {
		var rec history.Record
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("history line %q: %v", line, err)
		}
		if rec.Event == history.EventReload {
			recs = append(recs, rec)
		}
	}
	want := []struct{ result, kind, version string }{
		{"ok", "", "v2"}, {"ok", "", "v3"}, {"failed", "reload-failed", "v3"}, {"failed", "reload-timeout", "v3"}, {"ok", "", "v4"}}
	if len(recs) != len(want) {
		t.Fatalf("%d reload records, want %d: %+v", len(recs), len(want), recs)
	}
	for i, w := range want {
		r := recs[i]
		if r.Result != w.result || r.Kind != w.kind || r.WorkerVersion != w.version || r.Trigger != history.TriggerCtl || r.Gen != 1 ||
			r.Version != binaryVersion(t, helperBin) || (w.kind != "") != (r.Reason != "") {
			t.Errorf("reload record %d: %+v, want %+v", i, r, w)
		}
	}
}

// checkVersions checks that the current generation's workers are pids,
// unchanged (no process switch), each reporting version.
func checkVersions(t *testing.T, control string, pids []int, version string) {
	t.Helper()
	r := ctlOK(t, control, "status", "--json")
	var st engine.Status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Current == nil {
		t.Fatalf("status --json: %v: %s", err, r.stdout)
	}
	var got []int
	for _, w := range st.Current.Workers {
		got = append(got, w.PID)
		if w.Version != version || !w.Ready || w.Reloading {
			t.Errorf("worker %d: version %q, ready %v, reloading %v; want version %q, ready", w.PID, w.Version, w.Ready, w.Reloading, version)
		}
	}
	if !sameSet(got, pids) || st.State != "serving" {
		t.Errorf("state %s, workers %v; want serving, the same workers %v", st.State, got, pids)
	}
}

// TestReloadRefused: a worker that does not catch the reload signal (here
// sleep(1), ready by a delay, which the exec shim starts with SIGHUP
// ignored) is not sent it: the reload is refused at once, with and without
// --wait, and the worker lives on.
func TestReloadRefused(t *testing.T) {
	dir := t.TempDir()
	control, script := filepath.Join(dir, "control"), filepath.Join(dir, "sleeper")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexec sleep 1000\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := startSupervisor(t, supervisorConfig{binary: script,
		flags: []string{"--ready", "delay:50ms", "--ready-timeout", readyTimeout.String(), "--control", control}})
	gen := s.waitReady(1)
	for _, args := range [][]string{{"reload", "--wait"}, {"reload"}} {
		ctlFails(t, control, args, "ignores SIGHUP: it does not speak the reload contract (see the worker contract)",
			"nothing was signalled", "(refused)")
	}
	if got := s.workers(); !slices.Equal(got, gen.pids) {
		t.Errorf("workers %v after the refused reloads, want %v alive", got, gen.pids)
	}
	if st := ctlOK(t, control, "status").stdout; !strings.Contains(st, "last reload: FAILED") {
		t.Errorf("status does not show the refused reload:\n%s", st)
	}
}
