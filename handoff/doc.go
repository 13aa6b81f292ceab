// Package handoff is the contract between the supervisor and its workers,
// and the Go API a worker imports to keep it: take the listening sockets it
// was given, say when it is ready, and drain when told to, without losing a
// request.
//
// The contract is systemd's socket activation and sd_notify protocol, so a
// worker needs nothing of ours (any language, any program written for
// systemd works), and a Go worker using this package runs unchanged under the
// supervisor, under systemd itself, or on its own. See sd_listen_fds(3),
// sd_notify(3) and https://systemd.io/ for the originals.
//
// # The worker's environment
//
// Sockets: the listening sockets are open at fds 3, 4, 5, ... (ListenFDsStart
// onwards), in the order of these variables:
//
//	LISTEN_FDS=2              how many fds were passed
//	LISTEN_FDNAMES=http:admin one name per fd, colon-separated
//	LISTEN_PID=4242           the PID they are meant for: the worker's own
//
// A reader takes the fds only when LISTEN_PID is its own PID; otherwise the
// variables were meant for an ancestor and leaked through. Without
// LISTEN_FDNAMES every fd is named "unknown". os/exec cannot set a variable
// to the child's PID, so the supervisor starts each worker through an exec
// shim: its own binary, re-executed in a mode that sets LISTEN_PID to its PID
// and execs the worker, which keeps that PID.
//
// Notifications: NOTIFY_SOCKET names a Unix datagram socket, by absolute path
// or, when it begins with '@', in the abstract namespace. The worker sends
// datagrams of newline-separated KEY=VALUE lines:
//
//	READY=1      serving: the previous generation may now drain
//	STATUS=...   one line for humans, shown in the supervisor's logs
//	STOPPING=1   the drain has begun
//	WATCHDOG=1   alive; due at least every WATCHDOG_USEC when that is set
//
// The supervisor enables SO_PASSCRED on the socket and believes a datagram
// only when the kernel says its sender is the worker process itself, so
// another process cannot declare the worker ready.
//
// Watchdog: WATCHDOG_USEC is the interval in microseconds within which a
// WATCHDOG=1 must arrive, and WATCHDOG_PID, when set, the PID it is meant
// for.
//
// Drain: the supervisor sends SUPERVISOR_DRAIN_SIGNAL (its name, such as
// "SIGTERM", the default) once the next generation is ready. The worker then
// closes its copies of the listeners (the supervisor and the next generation
// keep the socket open, so connections queued in the kernel are not lost),
// finishes what is in flight and exits. A worker still running at the drain
// timeout is killed. SUPERVISOR_GENERATION is the worker's generation
// number, 1 for the first.
//
// # Handover mode
//
// With --mode handover the supervisor moves a stateful worker's state and
// its clients' connections to the next worker (data separated from logic:
// the players are data, the handlers are logic). The worker is started with
// SUPERVISOR_MODE=handover and SUPERVISOR_SNAPSHOT, the snapshot file's
// path. An upgrade, from the workers' side:
//
//  1. The new worker starts while the old one serves, with
//     SUPERVISOR_HANDOVER_FD: a SOCK_SEQPACKET connection to the supervisor.
//     It initialises (and grows its fd table, so that the connections to
//     come find room) and writes WAITING on it.
//  2. The old worker gets the drain signal. It stops serving, saves its state
//     to the snapshot atomically, stores its connections with the
//     supervisor's fd store (below) and sends HANDOVER=saved, then
//     BARRIER=1, and exits once the barrier returns.
//  3. The supervisor drops the stored connections whose peer hung up, passes
//     the rest on the handover connection ("FDS name:name:..." messages with
//     up to 250 fds each; every such message, and GO, comes after the
//     snapshot is committed) and writes GO. The new worker restores the
//     snapshot, resumes the connections by name, and sends READY=1. If the
//     supervisor closes the handover connection before GO instead, the
//     upgrade was called off (ErrHandoverAborted).
//  4. If the new worker fails before READY=1, the supervisor starts the old
//     binary again on the same snapshot, passing the stored connections
//     among LISTEN_FDS with their names: a cold start, as a first start or a
//     restart after a crash is, and as systemd passes its fd store.
//
// # Storing connections
//
// A worker stores a connection as systemd's fd store takes one: a notify
// datagram "FDSTORE=1\nFDNAME=name" with the fd attached (SCM_RIGHTS).
// systemd, and the supervisor, accept several fds in one datagram, all
// under that one name. The kernel passes at most 253 fds in a datagram and
// systemd reads at most 4096 bytes, so a thousand connections take four
// datagrams instead of a thousand (the notify socket queues only ten:
// net.unix.max_dgram_qlen).
//
// The supervisor's extension: when the fds of one datagram need a name
// each, FDNAME lists them, colon-separated, one per fd in order:
// "FDNAME=c0:c1:c2". A name may not contain ':' in systemd, which refuses
// such an FDNAME (and keeps the fds under its default name, "stored"), so a
// list cannot be mistaken for a systemd name. A list whose length is not
// the number of fds is refused the same way. StoreConn sends systemd's
// form, StoreConns the list only when the names differ.
//
// # The Go API
//
// New reads and then unsets that environment (so the worker's own children
// do not inherit it) and starts watching for the drain signal, SIGTERM and
// SIGINT. Listen and Listener return the passed sockets by name; Ready,
// Status, Stopping and Watchdog send notifications and do nothing when not
// supervised; Draining is closed on the drain signal; ServeHTTP runs an
// http.Server until then and drains it without losing a request.
//
//	w, err := handoff.New()
//	if err != nil {
//		log.Fatal(err)
//	}
//	ln, err := w.Listen("http", "tcp", ":8080") // :8080 only when run on its own
//	if err != nil {
//		log.Fatal(err)
//	}
//	srv := &http.Server{Handler: mux}
//	go func() {
//		<-w.Draining()
//		w.Stopping()
//	}()
//	w.Ready()
//	if err := handoff.ServeHTTP(srv, ln, w.Draining()); err != nil {
//		log.Fatal(err)
//	}
//
// A stateful worker in handover mode describes its state with State: a
// Restore and a Save function (the snapshot's format is the worker's own;
// package state writes one atomically, with checksums and schema
// versions), a Resume function that takes over the connections handed over
// by name, and an autosave period. State.Start waits for the handover and
// restores, State.Ready starts the autosaves, and State.HandOver, once the
// drain signal came and the worker stopped serving, saves and hands the
// connections over (outside handover mode it saves for a shutdown):
//
//	st := &handoff.State{Worker: w, Autosave: 5 * time.Second,
//		Restore: game.Load, Resume: game.Resume, Save: game.Save}
//	if err := st.Start(ctx); err != nil {
//		log.Fatal(err)
//	}
//	st.Ready()
//	<-w.Draining()
//	conns := game.Stop() // the sessions' connections, each named
//	if err := st.HandOver(conns); err != nil {
//		log.Fatal(err)
//	}
//
// AwaitHandover, StoreConns, HandoverSaved and the Handover* constants are
// the steps State takes, for a worker that takes them itself.
package handoff
