// Package handoff is the Go API a worker imports to keep the supervisor's
// worker contract: take the listening sockets it was given, say when it is
// ready, and drain when told to, without losing a request. The contract is
// systemd's socket activation and sd_notify protocol (sd_listen_fds(3),
// sd_notify(3)), so a worker needs nothing of ours, and a Go worker using
// this package runs unchanged under the supervisor, under systemd, or alone.
//
//	w, err := handoff.New()                     // reads and unsets LISTEN_*, NOTIFY_SOCKET, WATCHDOG_*
//	ln, err := w.Listen("http", "tcp", ":8080") // the passed socket; binds :8080 when run alone
//	w.Ready()                                   // READY=1; a no-op when not supervised
//	err = handoff.ServeHTTP(ctx, srv, ln, w.Draining())
//
// A stateful worker in handover mode keeps its data in a State, which
// restores it at start, autosaves it, and on the drain signal saves it and
// hands the connections to the next worker. Package handoff/handover has
// those steps one by one, for a worker that takes them itself.
//
// # The contract on the wire
//
// Sockets: fds 3, 4, ... are the listening sockets; LISTEN_FDS=2 says how
// many, LISTEN_FDNAMES=http:admin names them ("unknown" without it), and
// LISTEN_PID is the PID they are meant for: a worker that finds another PID
// there ignores them (they leaked from an ancestor). The supervisor execs
// each worker through a shim that sets LISTEN_PID to its own PID.
//
// Notifications: NOTIFY_SOCKET names a Unix datagram socket (a path, or
// '@' and an abstract name). A datagram holds KEY=VALUE lines: READY=1
// (serving: the previous generation may drain), STATUS=... (a line for the
// logs), STOPPING=1 (draining), WATCHDOG=1 (alive, due every WATCHDOG_USEC
// microseconds when that is set for this PID, WATCHDOG_PID), and in
// handover mode FDSTORE=1, HANDOVER=saved and HANDOVER=failed (below). The
// supervisor believes only datagrams that the kernel says the worker itself
// sent.
//
// Drain: once the next generation is ready the worker gets the signal that
// SUPERVISOR_DRAIN_SIGNAL names ("SIGTERM" by default). It closes its copies
// of the listeners (the socket stays open in the supervisor, so queued
// connections go to the next generation), finishes what is in flight and
// exits before the drain timeout. SUPERVISOR_GENERATION counts generations
// from 1.
//
// Reload in place (`supervisor ctl reload`, systemd's Type=notify-reload):
// the supervisor sends the signal SUPERVISOR_RELOAD_SIGNAL names ("SIGHUP"
// by default) to every worker of the serving generation, with no process
// switch. The worker answers at once "RELOADING=1\nMONOTONIC_USEC=N"
// (CLOCK_MONOTONIC, in microseconds), reloads what it can without a restart
// (scripts, configuration), then sends READY=1, with "VERSION=id" in the
// same datagram naming what it runs now (one line, at most 128 bytes), or,
// when the reload failed, one datagram "RELOAD=failed\nRELOAD_ERROR=reason"
// (one line, at most 512 bytes) and keeps what it ran before: that is the
// worker's business. No answer within --reload-timeout fails the reload;
// the worker is not killed. VERSION= is welcome in any datagram, READY=1 at
// start included; the supervisor shows it per worker. A worker that does
// not catch the reload signal is never sent it: the supervisor reads its
// caught and ignored signals (/proc/PID/status) and refuses the reload. The
// Go runtime catches every signal, so a Go worker not made with this package
// must handle or ignore the signal itself, or a reload kills it; New catches
// it, and Worker.Reloads delivers the requests, answered with Reload.Done or
// Reload.Failed (RELOADING=1 is sent for you).
//
// # The live fd store
//
// FDSTORE=1 with FDNAME= and fds attached keeps those fds in the
// supervisor's fd store, as systemd's: every worker started afterwards (a
// crash restart, the next generation) gets them among LISTEN_FDS, named, and
// FDSTOREREMOVE=1 with FDNAME= closes the supervisor's copies. Worker.StoreFD
// and Worker.RemoveFD send them; Worker.File takes a stored fd back (a memfd
// of state), and State.Start's Resume gets the stored connections. A worker
// whose data and connections are all in the store sets State.Live: its
// handover then saves nothing inside the blackout.
//
// With the supervisor's --standby, a second process per worker starts as a
// worker started ahead of a handover does, with SUPERVISOR_STANDBY=1 too
// (handover.Standby): it writes WAITING and waits for GO with no time
// limit, keeping what it read ahead up to date. When the worker dies, the
// supervisor sends it CRASHED before GO: a restart, not a handover
// (handover.HandedOver is false). A worker started ahead of a handover gets
// CRASHED too when the old worker died before HANDOVER=saved having kept
// its state in the live fd store (or before it was ready).
//
// # Handover mode
//
// With --mode handover a stateful worker's data and its clients'
// connections move to the next worker. Workers get SUPERVISOR_MODE=handover
// and SUPERVISOR_SNAPSHOT, the snapshot file's path. An upgrade:
//
//  1. The new worker starts with SUPERVISOR_HANDOVER_FD, a SOCK_SEQPACKET
//     connection to the supervisor, and once initialised writes WAITING.
//  2. The old worker gets the drain signal, stops, saves the snapshot,
//     stores its connections (below), sends HANDOVER=saved and BARRIER=1,
//     and exits once the barrier returns.
//  3. The supervisor sends the connections still open ("FDS name:name:...",
//     up to 253 fds a message) and GO: the new worker restores, resumes them
//     by name, sends READY=1. Closing the connection before GO calls the
//     upgrade off (ErrHandoverAborted).
//  4. A new worker that fails before READY=1 is rolled back: the old binary
//     starts on the same snapshot, the connections among LISTEN_FDS under
//     their names (a cold start, as a first start or a crash restart is).
//
// A worker that cannot save (a full disk, an unwritable directory) stores
// nothing and sends, in step 2 instead of HANDOVER=saved, one datagram
// "HANDOVER=failed\nHANDOVER_ERROR=reason" (the reason one line, at most
// 512 bytes), then goes on serving: it accepts again and serves the
// connections it had stopped, keeps autosaving, and waits for the next drain
// signal. The supervisor kills the waiting new worker, takes the old
// generation back as the one serving (its drain timeout no longer counts),
// and reports the upgrade (or self-upgrade) failed with kind save-failed and
// the reason: nobody is disconnected. State.HandOver does this and returns
// ErrSaveFailed; handover.Failed is the step on its own.
//
// Storing connections is systemd's fd store: "FDSTORE=1\nFDNAME=name" with
// the fds attached (SCM_RIGHTS), at most 253 fds and 4096 bytes a datagram.
// The supervisor's extension: FDNAME=c0:c1:c2 names each fd in order. A
// name with ':' is one systemd refuses, so a list is never mistaken for one.
package handoff
