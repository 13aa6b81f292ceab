// Package contract is the worker contract on the wire: the environment a
// worker is started with, the messages it sends, and the one parser of each
// variable that both sides read (ParseListenFDs, ParseDrainSignal). Package
// handoff documents the protocol for worker authors and speaks it for Go
// workers; the supervisor and package listener take it from here.
//
// Keep it small: the supervisor binary, which every worker start runs as the
// exec shim, links it, and must not link handoff and with it net/http.
package contract

// The environment a worker is started with: systemd's names, plus ours.
const (
	EnvListenFDs     = "LISTEN_FDS"               // number of passed fds, starting at fd 3
	EnvListenFDNames = "LISTEN_FDNAMES"           // colon-separated names, one per fd
	EnvListenPID     = "LISTEN_PID"               // the PID the fds are meant for
	EnvNotifySocket  = "NOTIFY_SOCKET"            // datagram socket for sd_notify messages
	EnvWatchdogUSec  = "WATCHDOG_USEC"            // ping interval bound, in microseconds
	EnvWatchdogPID   = "WATCHDOG_PID"             // the PID the watchdog setting is meant for
	EnvDrainSignal   = "SUPERVISOR_DRAIN_SIGNAL"  // the signal that tells a worker to drain
	EnvGeneration    = "SUPERVISOR_GENERATION"    // the worker's generation number, 1 for the first
	EnvReloadSignal  = "SUPERVISOR_RELOAD_SIGNAL" // the signal that asks a worker to reload in place
)

// ListenFDsStart is the first passed file descriptor (SD_LISTEN_FDS_START).
const ListenFDsStart = 3

// sd_notify messages, as the wire carries them.
const (
	MsgReady     = "READY=1"
	MsgStopping  = "STOPPING=1"
	MsgWatchdog  = "WATCHDOG=1"
	MsgStatusKey = "STATUS="
)

// Reloads in place (`supervisor ctl reload`), as systemd's
// Type=notify-reload: the supervisor sends SUPERVISOR_RELOAD_SIGNAL to each
// worker of the serving generation; the worker answers RELOADING=1 with
// MONOTONIC_USEC= at once, then READY=1 once it has reloaded (VERSION= may
// name what it now runs), or RELOAD=failed with RELOAD_ERROR= in the same
// datagram: it keeps what it ran before.
const (
	MsgReloading        = "RELOADING=1"
	MsgMonotonicUSecKey = "MONOTONIC_USEC="              // with RELOADING=1: CLOCK_MONOTONIC at the start of the reload, in µs
	MsgReloadFailed     = KeyReload + "=" + ReloadFailed // the reload failed; the worker serves on with what it ran before
	MsgReloadErrorKey   = KeyReloadError + "="           // with RELOAD=failed: why, one line (MaxReloadError bytes)
	// MsgVersionKey, in any message (with READY=1 at start or after a
	// reload, typically): the version of what the worker runs beyond its
	// binary (its scripts, its configuration), one line of at most
	// MaxVersion bytes. The supervisor shows it per worker.
	MsgVersionKey = KeyVersion + "="

	KeyReloading      = "RELOADING"
	KeyMonotonicUSec  = "MONOTONIC_USEC"
	KeyReload         = "RELOAD"
	KeyReloadError    = "RELOAD_ERROR"
	KeyVersion        = "VERSION"
	ReloadFailed      = "failed"
	MaxReloadError    = 512
	MaxVersion        = 128
	DefaultReloadName = "SIGHUP" // the reload signal when none is configured, as systemd's
)

// DefaultListenFDName is the name systemd gives a passed fd when
// LISTEN_FDNAMES is not set.
const DefaultListenFDName = "unknown"

// Handover mode (--mode handover).
const (
	EnvMode       = "SUPERVISOR_MODE"        // "handover" in handover mode
	EnvSnapshot   = "SUPERVISOR_SNAPSHOT"    // the snapshot file's path
	EnvHandoverFD = "SUPERVISOR_HANDOVER_FD" // the handover connection of a worker started ahead
	EnvStandby    = "SUPERVISOR_STANDBY"     // "1": a standby started ahead, which waits for GO without a time limit (--standby)

	ModeHandover = "handover"

	// Messages on NOTIFY_SOCKET from the worker handing over.
	MsgFDStore          = "FDSTORE=1" // with FDNAME= and the fds (SCM_RIGHTS), as systemd's fd store
	MsgFDNameKey        = "FDNAME="
	MsgFDStoreRemove    = "FDSTOREREMOVE=1"                  // with FDNAME=: the live store's fds of that name are closed
	MsgHandoverSaved    = KeyHandover + "=" + HandoverSaved  // the snapshot is committed and every connection stored
	MsgHandoverFailed   = KeyHandover + "=" + HandoverFailed // the worker could not save: it stored nothing and goes on serving
	MsgHandoverErrorKey = KeyHandoverError + "="             // with HANDOVER=failed: why, one line (MaxHandoverError bytes)

	// The same messages' keys and values, as a parser splits a line.
	KeyHandover      = "HANDOVER"
	KeyHandoverError = "HANDOVER_ERROR"
	HandoverSaved    = "saved"
	HandoverFailed   = "failed"

	// MaxHandoverError bounds HANDOVER_ERROR's value, in bytes: the
	// datagram stays far below systemd's 4096.
	MaxHandoverError = 512

	// Messages on the handover connection.
	HandoverWaiting = "WAITING" // worker → supervisor: initialised, waiting for the state
	HandoverFDsKey  = "FDS "    // supervisor → worker: "FDS name:name:…" with those fds attached
	HandoverGoneKey = "GONE "   // supervisor → worker: "GONE name:name:…", fds passed at start since removed from the store: close them
	HandoverGo      = "GO"      // supervisor → worker: the snapshot is written; restore and serve
	HandoverCrashed = "CRASHED" // supervisor → worker, before GO: the previous worker died (a standby promoted, or the old worker of a handover died before it saved): a restart, not a handover
)
