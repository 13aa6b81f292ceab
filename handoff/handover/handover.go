// Package handover is handover mode's steps one by one, for a worker that
// takes them itself; handoff.State takes them all, and most workers need
// nothing else. The protocol they speak is described in package handoff's
// documentation ("Handover mode", "Storing connections").
//
// A worker taking the steps itself, with w from handoff.New:
//
//	conns, err := handover.Await(ctx, w)    // at start: the connections handed over, once the old worker saved
//	restore(handover.SnapshotPath())         // then read the snapshot, serve conns, w.Ready()
//	<-w.Draining()                           // stop serving, then:
//	save(handover.SnapshotPath())            // write the snapshot atomically
//	err = handover.StoreConns(w, conns)      // store every connection, by name
//	err = handover.Saved(w)                  // HANDOVER=saved; exit once it returns
//
// If the save fails (a full disk), the worker stores nothing and says so
// instead, and goes on serving what it stopped:
//
//	err = handover.Failed(w, err.Error())    // HANDOVER=failed, HANDOVER_ERROR=why; serve on
//
// Outside handover mode (Enabled is false) Await returns at once and
// nothing is to be stored: the worker saves for a shutdown, if at all.
package handover

import (
	"context"
	"os"
	"syscall"
	"time"

	"github.com/procswitch/supervisor/handoff"
	"github.com/procswitch/supervisor/handoff/internal/link"
	"github.com/procswitch/supervisor/internal/contract"
)

// steps are what package handoff gives this one of a Worker (link.Steps).
type steps interface {
	Await(ctx context.Context) ([]handoff.Conn, error)
	HandedOver() bool
	StoreConn(name string, c syscall.Conn) error
	StoreConns(conns []handoff.Conn) error
	Saved() error
	Failed(reason string) error
	Barrier(timeout time.Duration) error
}

func of(w *handoff.Worker) steps { return link.Steps(w).(steps) }

// Enabled reports whether the supervisor runs this worker in handover mode
// (--mode handover, SUPERVISOR_MODE=handover): it then restores its state
// from SnapshotPath at start and, on the drain signal, saves it there and
// hands its connections over with StoreConns and Saved.
func Enabled() bool { return os.Getenv(contract.EnvMode) == contract.ModeHandover }

// SnapshotPath is where the worker restores its state from and saves it to
// (SUPERVISOR_SNAPSHOT); "" when not in handover mode.
func SnapshotPath() string { return os.Getenv(contract.EnvSnapshot) }

// Ahead reports whether this worker was started ahead of a handover: Await
// will say WAITING and wait, while the previous worker still serves, for
// its GO. Work done before Await (reading a state region ahead, say) is
// then outside the blackout; in a cold start (a first start, a restart
// after a crash, a rollback) nothing serves meanwhile, and such work is
// best done alongside Await, which then makes the passed connections ready.
// Call it before Await.
func Ahead() bool { return os.Getenv(contract.EnvHandoverFD) != "" }

// Standby reports whether this worker is a standby (the supervisor's
// --standby): started ahead as for a handover, it waits for GO with no time
// limit, and gets it when the worker it stands by for dies; HandedOver is
// then false, as after a crash restart. Keep what was read ahead up to
// date while waiting. Call it before Await.
func Standby() bool { return Ahead() && os.Getenv(contract.EnvStandby) == "1" }

// Await returns the connections handed over from the previous worker. Call
// it once the worker is initialised, before it restores its state and
// before it accepts.
//
// In a worker started ahead of a handover it says WAITING to the supervisor
// and blocks, while the previous worker still serves, until that worker has
// saved its snapshot; the supervisor then passes the stored connections and
// says GO. If the supervisor calls the upgrade off instead, Await returns
// handoff.ErrHandoverAborted, and the worker should exit. Otherwise (a first
// start, a restart after a crash, a rollback) it returns at once with the
// connections passed among LISTEN_FDS, if any. ctx bounds the wait.
func Await(ctx context.Context, w *handoff.Worker) ([]handoff.Conn, error) {
	return of(w).Await(ctx)
}

// HandedOver reports whether Await took this worker's state over from a
// previous worker's handover (the supervisor said GO), rather than from a
// cold start: a first start, a restart after a crash (a standby's
// promotion included), a rollback.
func HandedOver(w *handoff.Worker) bool { return of(w).HandedOver() }

// StoreConn hands c to the supervisor's fd store under name (FDSTORE=1 with
// FDNAME=name, exactly as systemd's fd store takes it), for the next worker.
// The name is 1 to 255 bytes without ':' or whitespace. The worker keeps its
// own copy: close it after Saved, or just exit. To store many connections,
// StoreConns is faster.
func StoreConn(w *handoff.Worker, name string, c syscall.Conn) error {
	return of(w).StoreConn(name, c)
}

// StoreConns hands conns to the supervisor's fd store, as StoreConn does,
// many to a datagram: up to 253 fds (the kernel's limit per message) and
// 4096 bytes (systemd's), so that a thousand connections take four
// datagrams instead of a thousand. Each connection must be backed by a file
// descriptor (a *net.TCPConn or *net.UnixConn, or any syscall.Conn), and its
// Name must be valid for StoreConn.
//
// A datagram whose connections share one name is systemd's FDSTORE=1 with
// that FDNAME. Otherwise FDNAME lists one name per fd, colon-separated: the
// supervisor's extension, which systemd refuses (as it refuses every ':'),
// storing the fds under its default name.
//
// A connection already closed is skipped; the others are stored, and the
// error names it. A failed send stops StoreConns: the supervisor has the
// datagrams sent before it.
func StoreConns(w *handoff.Worker, conns []handoff.Conn) error {
	return of(w).StoreConns(conns)
}

// Saved tells the supervisor that the snapshot is committed and every
// connection stored (HANDOVER=saved): the next worker may restore. It
// returns once the supervisor has processed that and every message before
// it (Barrier), so the worker may exit without its exit overtaking a stored
// connection.
func Saved(w *handoff.Worker) error { return of(w).Saved() }

// Failed tells the supervisor that the worker could not save its state,
// and so stores nothing and goes on serving (HANDOVER=failed, with
// HANDOVER_ERROR=reason): the supervisor stops the next worker, lets this
// one serve on, and reports the upgrade failed with kind save-failed and
// the reason. The reason is made one line (control characters become
// spaces) of at most 512 bytes. Call it instead of StoreConns and Saved,
// then resume serving: accept again, and serve the connections that were
// stopped. Failed re-arms w.Draining first: the next drain signal, for the
// next upgrade, closes a new channel. A no-op but for that, returning nil,
// when not supervised.
func Failed(w *handoff.Worker, reason string) error { return of(w).Failed(reason) }

// Barrier waits, at most timeout, until the supervisor has processed every
// notification the worker sent before it, as sd_notify_barrier(3). A no-op
// returning nil when not supervised.
func Barrier(w *handoff.Worker, timeout time.Duration) error {
	return of(w).Barrier(timeout)
}
