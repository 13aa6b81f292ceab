package supervisor

import (
	"errors"
	"fmt"
)

// ErrStopping is the result of an upgrade asked for, or cut short, by a
// stop: an *UpgradeError of kind Cancelled or Refused unwraps to it.
var ErrStopping = errors.New("supervisor: stopping")

// Kind says why an upgrade, a self-upgrade or a rollback did not happen.
// Its value is the word that logs (the "kind" field), `ctl status --json`
// and the control protocol carry.
type Kind string

// The kinds of failure.
const (
	KindNotExecutable  Kind = "not-executable"      // the binary at the path cannot be run
	KindStartFailed    Kind = "start-failed"        // the supervisor could not start it (fork, notify socket, fds)
	KindExited         Kind = "exited-before-ready" // the new worker exited before it was ready
	KindNotReady       Kind = "not-ready-in-time"   // the new worker was not ready within the ready timeout
	KindRestoreFailed  Kind = "restore-failed"      // handover: the new worker failed after it was told to restore
	KindPassFailed     Kind = "pass-failed"         // handover: the connections could not be passed to the new worker
	KindSaveFailed     Kind = "save-failed"         // handover: the old worker could not save its state
	KindSuccessor      Kind = "successor-failed"    // self-upgrade: the new supervisor did not take over
	KindRefused        Kind = "refused"             // the request cannot be served in the supervisor's state
	KindStateLost      Kind = "state-lost"          // it happened, but players lost state or connections: the reason says what
	KindRollbackFailed Kind = "rollback-failed"     // a rollback's binary did not serve
	KindCancelled      Kind = "cancelled"           // a stop cut it short
	KindReloadFailed   Kind = "reload-failed"       // a worker said RELOAD=failed, or exited during the reload
	KindReloadTimeout  Kind = "reload-timeout"      // a worker did not answer the reload within the reload timeout
)

// UpgradeError is why an upgrade (Gen is the generation it started), a
// self-upgrade (Gen 0) or a request that was refused did not happen. The
// generation that served before it still serves, unless RolledBack says
// that the previous binary was started again on the same state.
type UpgradeError struct {
	Gen         int
	Kind        Kind
	Reason      string // in words, with the fix where there is one
	RolledBack  bool   // handover mode: the previous binary restarted on the same snapshot and connections
	SelfUpgrade bool   // the supervisor's own upgrade (SIGUSR2), not the workers'
	Reload      bool   // a reload in place (Reload), not an upgrade
	cause       error  // what it unwraps to, if anything
}

func (e *UpgradeError) Error() string {
	switch {
	case e.Kind == KindRefused || e.Kind == KindCancelled:
		return e.Reason
	case e.SelfUpgrade:
		return "self-upgrade failed: " + e.Reason
	case e.Reload && e.Gen > 0:
		return fmt.Sprintf("reload of generation %d failed: %s", e.Gen, e.Reason)
	case e.Reload:
		return "reload failed: " + e.Reason
	case e.Gen == 0:
		return "upgrade failed: " + e.Reason
	}
	return fmt.Sprintf("upgrade to generation %d failed: %s", e.Gen, e.Reason)
}

// Unwrap makes a request refused or cancelled by a stop match ErrStopping.
func (e *UpgradeError) Unwrap() error { return e.cause }

// KindOf is err's kind, or "" when err is nil or not an *UpgradeError.
func KindOf(err error) Kind {
	var ue *UpgradeError
	if errors.As(err, &ue) {
		return ue.Kind
	}
	return ""
}

func refused(reason string) *UpgradeError {
	return &UpgradeError{Kind: KindRefused, Reason: reason}
}

// stoppingError is the answer to a request once a stop has begun (kind
// Refused), or to an upgrade that a stop cut short (kind Cancelled).
func stoppingError(gen int, kind Kind) *UpgradeError {
	return &UpgradeError{Gen: gen, Kind: kind, Reason: ErrStopping.Error(), cause: ErrStopping}
}
