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
package handoff
