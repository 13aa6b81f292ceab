package main

import (
	"fmt"
	"path/filepath"

	"github.com/procswitch/supervisor/internal/history"
	"github.com/rs/zerolog"
)

// The upgrade history (package history) in --state-dir: the engine's
// records are appended to it, `ctl history` reads it, and it is closed, what
// is queued written, when the supervisor exits, after a self-upgrade too. A
// successor opens the same file; the history's lock lets both write.

// openHistory opens the history in dir; with no dir there is none (nil),
// and the log says so once. A dir that cannot hold it is an error, before
// any worker starts.
func openHistory(dir string, log zerolog.Logger) (*history.Log, error) {
	if dir == "" {
		log.Info().Msg("no upgrade history: give --state-dir DIR (or run under systemd with StateDirectory=) to keep one")
		return nil, nil
	}
	h, err := history.Open(dir, history.Options{Log: log})
	if err != nil {
		return nil, fmt.Errorf("--state-dir %s: cannot keep the upgrade history there: %w (give a directory the supervisor's user can write)", dir, err)
	}
	log.Info().Str("file", filepath.Join(dir, history.FileName)).Msg("upgrade history")
	return h, nil
}

// recorder is the engine's Config.Record for h: nil without a history.
// Append never waits for the disk, as the engine's loop needs.
func recorder(h *history.Log, log zerolog.Logger) func(history.Record) {
	if h == nil {
		return nil
	}
	return func(r history.Record) {
		if err := h.Append(r); err != nil {
			log.Warn().Err(err).Str("event", r.Event).Int("gen", r.Gen).Msg("history record not written")
		}
	}
}

// closeHistory writes what is queued and closes h.
func closeHistory(h *history.Log, log zerolog.Logger) {
	if h == nil {
		return
	}
	if err := h.Close(); err != nil {
		log.Error().Err(err).Str("dir", h.Dir()).Msg("the last history records may be lost")
	}
}
