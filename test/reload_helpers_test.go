package test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/procswitch/supervisor/handoff"
)

// scriptsEnv names the file the reloader helper loads as its "scripts": its
// content is the version it runs; "error: why" makes the load fail with
// why; "hang" makes a reload never answer.
const scriptsEnv = "PROCSWITCH_TEST_SCRIPTS"

func init() {
	// reloader serves with package handoff, says which version of its
	// scripts it runs (VERSION=) at start and after each reload, and
	// answers the reload signal through Worker.Reloads (reload_test.go).
	helpers["reloader"] = helperReloader
}

// loadScripts reads the scripts file: the version, or why it cannot load.
func loadScripts() (version string, hang bool, err error) {
	b, err := os.ReadFile(os.Getenv(scriptsEnv))
	if err != nil {
		return "", false, err
	}
	s := strings.TrimSpace(string(b))
	switch {
	case s == "hang":
		return "", true, nil
	case strings.HasPrefix(s, "error: "):
		return "", false, errors.New(strings.TrimPrefix(s, "error: "))
	}
	return s, false, nil
}

func helperReloader() int {
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "helper reloader: %v\n", err)
		return 1
	}
	w, err := handoff.New()
	if err != nil {
		return fail(err)
	}
	defer w.Close()
	version, _, err := loadScripts()
	if err != nil {
		return fail(err)
	}
	var running atomic.Value
	running.Store(version)
	ln, err := w.Listener("http")
	if err != nil {
		return fail(err)
	}
	pid := strconv.Itoa(os.Getpid())
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("X-Worker-Pid", pid)
		rw.Header().Set("X-Worker-Version", running.Load().(string))
		fmt.Fprintln(rw, "scripts", running.Load())
	})}
	go func() {
		for r := range w.Reloads() {
			v, hang, err := loadScripts()
			switch {
			case hang: // RELOADING=1 was sent; no answer ever comes
			case err != nil:
				r.Failed(err) // serves on with the scripts it had
			default:
				running.Store(v)
				r.Done(v)
			}
		}
	}()
	if err := w.ReportVersion(version); err != nil {
		return fail(err)
	}
	if err := w.Ready(); err != nil {
		return fail(err)
	}
	if err := handoff.ServeHTTP(context.Background(), srv, ln, w.Draining()); err != nil {
		return fail(err)
	}
	return 0
}
