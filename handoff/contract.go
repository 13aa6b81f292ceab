package handoff

// The environment a worker is started with. These are systemd's names, so a
// program written for systemd socket activation needs nothing of ours.
const (
	EnvListenFDs     = "LISTEN_FDS"     // number of passed fds, starting at fd 3
	EnvListenFDNames = "LISTEN_FDNAMES" // colon-separated names, one per fd
	EnvListenPID     = "LISTEN_PID"     // the PID the fds are meant for
	EnvNotifySocket  = "NOTIFY_SOCKET"  // datagram socket for sd_notify messages
	EnvWatchdogUSec  = "WATCHDOG_USEC"  // ping interval bound, in microseconds
	EnvWatchdogPID   = "WATCHDOG_PID"   // the PID the watchdog setting is meant for

	// EnvDrainSignal names the signal that tells a worker to drain, such as
	// "SIGTERM". It is the supervisor's own addition; systemd stops with SIGTERM.
	EnvDrainSignal = "SUPERVISOR_DRAIN_SIGNAL"
	// EnvGeneration is the worker's generation number, 1 for the first.
	EnvGeneration = "SUPERVISOR_GENERATION"
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

// DefaultListenFDName is the name systemd gives a passed fd when
// LISTEN_FDNAMES is not set.
const DefaultListenFDName = "unknown"

// Handover mode (--mode handover), for stateful workers. These are the
// supervisor's additions to systemd's contract; the handover doc in doc.go
// describes the sequence.
const (
	// EnvMode is "handover" when the worker runs in handover mode.
	EnvMode = "SUPERVISOR_MODE"
	// EnvSnapshot is the snapshot file's path: restored from at start when it
	// exists, saved to when the worker is told to hand over.
	EnvSnapshot = "SUPERVISOR_SNAPSHOT"
	// EnvHandoverFD is set only in a worker started ahead of a handover: the
	// fd of a SOCK_SEQPACKET connection on which it says it is initialised
	// and then receives the stored connections and the word to restore.
	EnvHandoverFD = "SUPERVISOR_HANDOVER_FD"

	ModeHandover = "handover"

	// Messages on NOTIFY_SOCKET from the worker handing over.
	MsgFDStore       = "FDSTORE=1" // with FDNAME=name and the fd (SCM_RIGHTS), as systemd's fd store
	MsgFDNameKey     = "FDNAME="
	MsgHandoverSaved = "HANDOVER=saved" // the snapshot is committed and every connection stored

	// Messages on the handover connection.
	HandoverWaiting = "WAITING" // worker → supervisor: initialised, waiting for the state
	HandoverFDsKey  = "FDS "    // supervisor → worker: "FDS name:name:…" with those fds attached
	HandoverGo      = "GO"      // supervisor → worker: the snapshot is written; restore and serve
)
