package supervisor

import "github.com/procswitch/supervisor/internal/notify"

// Requests and events the loop handles.
type (
	upgradeRequest struct {
		reply   chan Result
		trigger string // history.Trigger*
	}
	rollbackRequest struct {
		reply chan Result
		to    int // the generation whose binary to go back to; 0: the previous one
	}
	selfUpgradeRequest struct{ reply chan Result }
	stopRequest        struct{}
	successorEvent     struct{ err error } // the successor supervisor serves (nil), or failed
	passFailedEvent    struct {
		w   *worker
		err error
	}
	// selfHandOverRequest: the successor's first worker is initialised; our
	// worker saves for it (selfupgrade.go).
	selfHandOverRequest struct{ reply chan handOverResult }
	// predecessorEvent: the predecessor's worker saved, and these are its
	// connections; or why not (predecessor.go).
	predecessorEvent struct {
		w     *worker
		conns []StoredConn
		err   error
	}
	exitEvent         struct{ w *worker }
	probeReadyEvent   struct{ w *worker }
	waitingEvent      struct{ w *worker }
	readyTimeoutEvent struct {
		w     *worker
		token int // the worker's readyToken when armed
	}
	watchdogEvent     struct{ w *worker }
	drainTimeoutEvent struct {
		gen   *generation
		token int // the generation's drainTok when armed
	}
	restartEvent struct {
		gen  *generation
		slot *slot
	}
	notifyEvent struct {
		gen *generation
		msg notify.Message
	}
)
