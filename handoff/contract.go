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
