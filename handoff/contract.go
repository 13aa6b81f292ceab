package handoff

import "github.com/procswitch/supervisor/internal/contract"

// The environment a worker is started with. These are systemd's names, so a
// program written for systemd socket activation needs nothing of ours. (The
// values live in an internal package that the supervisor shares; each
// comment starts with the value.)
const (
	EnvListenFDs     = contract.EnvListenFDs     // LISTEN_FDS: number of passed fds, starting at fd 3
	EnvListenFDNames = contract.EnvListenFDNames // LISTEN_FDNAMES: colon-separated names, one per fd
	EnvListenPID     = contract.EnvListenPID     // LISTEN_PID: the PID the fds are meant for
	EnvNotifySocket  = contract.EnvNotifySocket  // NOTIFY_SOCKET: datagram socket for sd_notify messages
	EnvWatchdogUSec  = contract.EnvWatchdogUSec  // WATCHDOG_USEC: ping interval bound, in microseconds
	EnvWatchdogPID   = contract.EnvWatchdogPID   // WATCHDOG_PID: the PID the watchdog setting is meant for

	// EnvDrainSignal, SUPERVISOR_DRAIN_SIGNAL, names the signal that tells a
	// worker to drain, such as "SIGTERM". It is the supervisor's own
	// addition; systemd stops with SIGTERM.
	EnvDrainSignal = contract.EnvDrainSignal
	// EnvGeneration, SUPERVISOR_GENERATION, is the worker's generation
	// number, 1 for the first.
	EnvGeneration = contract.EnvGeneration
)

// ListenFDsStart is the first passed file descriptor (SD_LISTEN_FDS_START).
const ListenFDsStart = contract.ListenFDsStart

// sd_notify messages, as the wire carries them.
const (
	MsgReady     = contract.MsgReady     // READY=1
	MsgStopping  = contract.MsgStopping  // STOPPING=1
	MsgWatchdog  = contract.MsgWatchdog  // WATCHDOG=1
	MsgStatusKey = contract.MsgStatusKey // STATUS=
)

// DefaultListenFDName, "unknown", is the name systemd gives a passed fd when
// LISTEN_FDNAMES is not set.
const DefaultListenFDName = contract.DefaultListenFDName

// Handover mode (--mode handover), for stateful workers. These are the
// supervisor's additions to systemd's contract; the handover doc in doc.go
// describes the sequence.
const (
	// EnvMode, SUPERVISOR_MODE, is "handover" when the worker runs in
	// handover mode.
	EnvMode = contract.EnvMode
	// EnvSnapshot, SUPERVISOR_SNAPSHOT, is the snapshot file's path: restored
	// from at start when it exists, saved to when the worker is told to hand
	// over.
	EnvSnapshot = contract.EnvSnapshot
	// EnvHandoverFD, SUPERVISOR_HANDOVER_FD, is set only in a worker started
	// ahead of a handover: the fd of a SOCK_SEQPACKET connection on which it
	// says it is initialised and then receives the stored connections and the
	// word to restore.
	EnvHandoverFD = contract.EnvHandoverFD

	ModeHandover = contract.ModeHandover // handover

	// Messages on NOTIFY_SOCKET from the worker handing over.
	MsgFDStore       = contract.MsgFDStore       // FDSTORE=1, with FDNAME= and the fds (SCM_RIGHTS), as systemd's fd store; "Storing connections" in the package doc
	MsgFDNameKey     = contract.MsgFDNameKey     // FDNAME=
	MsgHandoverSaved = contract.MsgHandoverSaved // HANDOVER=saved: the snapshot is committed and every connection stored

	// Messages on the handover connection.
	HandoverWaiting = contract.HandoverWaiting // WAITING, worker → supervisor: initialised, waiting for the state
	HandoverFDsKey  = contract.HandoverFDsKey  // "FDS ", supervisor → worker: "FDS name:name:…" with those fds attached
	HandoverGo      = contract.HandoverGo      // GO, supervisor → worker: the snapshot is written; restore and serve
)
