// Package history is the supervisor's record of what ran when: every
// upgrade, rollback, self-upgrade, reload and crash restart, one JSON line each, in
// a file in the state directory that survives restarts and self-upgrades.
//
// Log writes it: Append queues a record and returns at once, one goroutine
// writes and fsyncs them in order, and Last reads the last ones back. The
// file is FileName in the directory, rotated to FileName.1 and so on when
// it would pass Options.MaxSize; lines are whole, and writers (an old
// supervisor draining and its successor) take turns under flock(2) on a
// lock file beside it. A line that is not a record is skipped when read.
package history

import "time"

// Record is one line of the history.
type Record struct {
	Time    time.Time `json:"time"`
	Event   string    `json:"event"`   // an Event* constant
	Trigger string    `json:"trigger"` // a Trigger* constant: what asked for it
	Gen     int       `json:"gen,omitempty"`
	FromGen int       `json:"from_gen,omitempty"` // the generation it replaced, rolled back from, or restarted
	Binary  string    `json:"binary,omitempty"`
	Version string    `json:"version,omitempty"` // sha256 of the binary, 12 hex digits, once known
	Result  string    `json:"result"`            // a Result* constant
	Kind    string    `json:"kind,omitempty"`    // of the failure or the loss (supervisor.Kind)
	Reason  string    `json:"reason,omitempty"`
	Lost    string    `json:"lost,omitempty"` // what players lost, in words, when anything was
	// WorkerVersion, of a reload: what the workers said they run now
	// (VERSION=: their scripts, their configuration), distinct values
	// comma-separated.
	WorkerVersion string `json:"worker_version,omitempty"`

	ReadyMS    float64 `json:"ready_ms,omitempty"` // start to ready; of a reload, the signal to the last answer
	BlackoutMS float64 `json:"blackout_ms,omitempty"`
	DrainMS    float64 `json:"drain_ms,omitempty"`
	PID        int     `json:"pid,omitempty"` // the supervisor that wrote it
}

// Events.
const (
	EventStart       = "start"        // the supervisor's first generation
	EventUpgrade     = "upgrade"      // a new generation from the path
	EventRollback    = "rollback"     // a held earlier binary, by request or on probation
	EventSelfUpgrade = "self-upgrade" // SIGUSR2: a successor supervisor
	EventCrash       = "crash"        // a worker of the current generation died and is restarted
	EventReload      = "reload"       // the serving generation's workers reloaded in place (ctl reload)
	EventDrained     = "drained"      // an old generation's last worker exited (DrainMS)
	EventDropped     = "dropped"      // written by Log itself: records were lost; Lost says how many, Reason why
)

// Triggers.
const (
	TriggerStart     = "start"
	TriggerSIGHUP    = "sighup"
	TriggerCtl       = "ctl"
	TriggerSIGUSR2   = "sigusr2"
	TriggerProbation = "probation" // the new generation failed during probation
	TriggerCrash     = "crash"
)

// Results.
const (
	ResultOK     = "ok"
	ResultFailed = "failed" // did not happen; what served before still serves
	ResultLost   = "lost"   // happened, but player state or connections were lost: Lost says what
)
