package handover_test

import (
	"context"
	"log"
	"net"
	"time"

	"github.com/procswitch/supervisor/handoff"
	"github.com/procswitch/supervisor/handoff/handover"
)

// A worker that takes the handover's steps itself, instead of letting
// handoff.State take them: it waits for the previous worker's connections,
// restores, serves, and on the drain signal saves, stores its connections
// by name and says so; when it cannot save, it says that instead and serves
// on.
func Example() {
	w, err := handoff.New()
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conns, err := handover.Await(ctx, w) // at once outside handover mode
	if err != nil {
		log.Fatal(err) // handoff.ErrHandoverAborted: the upgrade was called off
	}
	sessions := map[string]net.Conn{} // the worker's live connections, by session id
	for _, c := range conns {
		sessions[c.Name] = c.Conn
	}
	// ... restore from handover.SnapshotPath(), serve sessions, accept ...
	w.Ready()
	for {
		<-w.Draining()
		// ... stop serving, save to handover.SnapshotPath() ...
		saveErr := save(handover.SnapshotPath())
		if !handover.Enabled() {
			return // a shutdown: nobody takes the connections
		}
		if saveErr == nil {
			break
		}
		// A full disk: store nothing, say why, and serve on. The upgrade
		// fails (kind save-failed); the next drain signal tries again.
		if err := handover.Failed(w, saveErr.Error()); err != nil {
			log.Print(err)
		}
		// ... serve sessions again, accept again ...
	}
	stored := make([]handoff.Conn, 0, len(sessions))
	for id, c := range sessions {
		stored = append(stored, handoff.Conn{Name: id, Conn: c})
	}
	if err := handover.StoreConns(w, stored); err != nil {
		log.Print(err) // the connections it names were not stored
	}
	if err := handover.Saved(w); err != nil {
		log.Fatal(err)
	}
}

// save writes the worker's state to path atomically.
func save(path string) error { return nil }
