package handoff

import (
	"syscall"

	"github.com/procswitch/supervisor/internal/contract"
)

// The live fd store: systemd's fd store, which the supervisor keeps as
// systemd does. What a worker stores there (each connection as it accepts
// it, the memfd of its state) the supervisor holds across the worker's
// crash, restart, rollback or upgrade, and gives to every worker it starts
// afterwards among the passed fds with their names: Names, File, and, for
// connections, State.Start's Resume. A kill -9 is then a pause for the
// players, not a disconnect.
//
// Remove an fd when done with it (a connection closed), or the supervisor
// keeps the socket open: the peer would not see the close. A connection
// whose peer hung up is dropped by the supervisor on its own before the
// next start. A worker that uses the live store does not hand its
// connections over at an upgrade: they are in the store already.

// StoreFD keeps c's fd in the supervisor's live fd store under name
// (FDSTORE=1, FDNAME=name): a *net.TCPConn, an *os.File (a memfd). name is
// 1 to 255 bytes without ':' or white space; a name already stored adds a
// second fd under it (RemoveFD removes both). The store is bounded
// (--fd-store-max): beyond it the supervisor refuses and logs it, which the
// worker does not hear. An error when not supervised.
func (w *Worker) StoreFD(name string, c syscall.Conn) error { return w.storeConn(name, c) }

// StoreFDs is StoreFD for many at once, up to 253 to a datagram.
func (w *Worker) StoreFDs(conns []Conn) error { return w.storeConns(conns) }

// RemoveFD closes the supervisor's copies of the fds stored under name
// (FDSTOREREMOVE=1, FDNAME=name). Call it before closing a stored
// connection, so that the close reaches the peer. A no-op returning nil
// when not supervised.
func (w *Worker) RemoveFD(name string) error {
	if w.notifyAddr == "" {
		return nil
	}
	if err := checkFDName(name); err != nil {
		return err
	}
	return w.notifyWithFDs(contract.MsgFDStoreRemove + "\n" + contract.MsgFDNameKey + name)
}
