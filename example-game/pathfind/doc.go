// Command pathfind is a stateless pathfinding service, the example of a
// service that the supervisor switches between versions without losing a
// request. A scene server asks it for a path across a grid map:
//
//	GET /path?from=100,200&to=300,400
//	200 {"from":[100,200],"to":[300,400],"path":[[100,200],[100,201],...,[300,400]],"cost":3156}
//
// The map is the built-in one (DefaultMap: 512×512 rooms with doors and
// scattered blocks, the same in every build) or one read with --map FILE
// (one row per line, top row first, '.' free and '#' blocked, all rows the
// same width; see mapfile.go).
//
// Movement: from a free cell to any of its 8 neighbours that is free. A
// straight step costs 10 and a diagonal one 14. Corners are not cut: a
// diagonal step needs both orthogonal cells it passes between to be free.
// The answer is a cheapest path under these rules, found by A* with the
// octile heuristic (10·max(dx,dy) + 4·min(dx,dy)), which never
// overestimates and is consistent, so the cost is optimal. Whether two cells
// are connected at all is known from the map alone, so a query without a
// path is answered at once.
//
// Other answers: 400 {"error":"..."} for a missing, malformed, off-map or
// blocked point, saying which one and what is valid; 404 when no path
// exists; 405 for a method other than GET (or HEAD); and
//
//	GET /healthz
//	200 {"status":"ok","version":"v1.2.3","pid":4711}
//
// after solving a small fixed query (503 with an error if that fails).
// Every answer carries the headers X-Worker-Pid and X-Worker-Version. The
// version is set at build time:
//
//	go build -ldflags "-X main.version=v1.2.3" ./example-game/pathfind
//
// It runs under the supervisor or on its own. Under the supervisor it
// serves the socket passed as --socket-name (default "http"; or the only one
// passed), reports ready once the map is loaded, pings the watchdog after a
// passing self-check if asked to, and on the drain signal stops accepting,
// finishes the requests in flight and exits 0. On its own it binds --listen
// (default 127.0.0.1:8080) and drains on SIGTERM or SIGINT.
//
// Flags: --listen ADDR, --socket-name NAME, --map FILE. A bad flag or a bad
// map is reported in one line on stderr, with exit status 2.
package main
