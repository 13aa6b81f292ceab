// Command gameserver is a stateful TCP game server, the example of a service
// whose players keep their coins, and their TCP connections, while the
// supervisor replaces its code: data is separated from logic, so the old
// worker saves its data, the new one restores it, and the connections move
// with it.
//
// # Protocol
//
// One text line per command and one per reply, each ending in "\n":
//
//	LOGIN <player-id>   OK player=<id> coin=<n> version=<v>
//	WORK                OK coin=<n>
//	BUY <item-id>       OK coin=<n> item=<id> count=<k> remain=<r>
//	STATUS              OK player=<id> coin=<n> bag=<item>:<count>,... version=<v> pid=<pid>
//	STOCK <item-id>     OK item=<id> remain=<r>
//	SHOP                OK sold=<n> goods=<item>:<name>:<price>,...
//	QUIT                BYE, then the server closes the connection
//
// A new player starts with 100 coins, level 1 and 0 exp; WORK adds 5 coins
// and 1 exp (a level per 100 exp: kept in the data, not shown by the
// protocol). The shop sells 1001 (potion, 10 coins) and 1002 (gourd, 2
// coins); each good has one shop-wide stock (remain, --stock on a first
// start) that BUY decrements. The bag lists goods with a count above 0, in
// item order; an empty bag is "bag=" with nothing after. SHOP shows how
// many goods this process has sold since it loaded the shop script (state
// of the script that a patch keeps and a new process starts at 0) and the
// catalogue. Those are the embedded scripts' rules; a --scripts directory
// may have others.
//
// Every line gets exactly one reply, in order; anything wrong gets
// "ERR <reason>" and the connection goes on:
//   - commands are upper case and case-sensitive ("work" is unknown); words
//     are separated by white space; a "\r" before the "\n" is accepted;
//   - an empty line, an unknown command, or the wrong number of arguments
//     ("ERR usage: BUY <item-id>");
//   - any command but LOGIN and QUIT before LOGIN (STOCK included);
//   - a player id that is not 1 to 64 characters of [A-Za-z0-9_-], which
//     are case-sensitive; LOGIN on a connection already logged in ("ERR
//     already logged in as <id>": one player per connection);
//   - an item id that is not digits, or not in the shop; BUY of a good whose
//     stock is 0 ("ERR out of stock: item <id>");
//   - with the fixed shop script only, BUY of a good the player cannot
//     afford: "ERR not enough coin";
//   - a rule whose script fails while it runs: "ERR script error:
//     <file>:<line>: <message>"; the command changed nothing.
//
// A line may hold 1024 bytes, not counting its "\n". A longer one gets "ERR
// line too long: at most 1024 bytes", at once (the server does not wait for
// its end), and the server closes that connection, as after QUIT: it sends
// its FIN first and discards what the client still sends for up to 1s, so
// that the last reply is not destroyed by a reset.
//
// A line that begins with "NOTICE " is not a reply (every reply begins with
// "OK", "ERR" or "BYE"); a client reading a reply skips it. The server sends
// one, once, to each connection it resumes after a cold start (a rollback
// to the previous build, on probation or when the new build failed to
// restore), after the replies that the previous worker had not written and
// before any other:
//
//	NOTICE restarted: your last command may not have been applied; send STATUS to resync
//
// Whatever the server did after its snapshot was taken is lost then,
// replies included: a command whose reply has not arrived may never get one,
// and what the client knows may be ahead of the server. A client that gets
// the notice sends STATUS and takes its coin and bag from the reply (a reply
// to a command sent before the notice may still come first). After a live
// handover (a normal upgrade) nothing is lost and no notice is sent.
//
// When the server ends a connection itself (QUIT, a line too long, a
// client too slow to read, a shutdown), it shuts the TCP connection down
// (shutdown(2)) before closing it: during probation the supervisor holds a
// copy of every handed-over connection, and a close alone would leave it
// open.
//
// One player may be logged in on several connections at once. They share
// the player's one row: every command runs under the game's lock, so each
// sees the others' effects and no update is lost.
//
// # Rules in Lua, data in Go
//
// The data (players, coins, bags, stock) is Go's (world.go); the rules are
// Lua modules (scripts/): game.lua has WORK's pay and the level rule and
// lays out the STATUS reply; shop.lua has the goods and their prices, the
// stock and balance checks, and the count SHOP shows. The Go handlers
// (game.go) parse a command, pass the values a rule needs to a Lua
// function, and apply what it returns: Lua decides, Go stores. A rule
// never holds the data, so the snapshot, the handover and the autosave do
// not know about Lua; and a script can be replaced in a running process
// (a reload) without touching the data.
//
// The scripts are embedded in the binary (go:embed), and --scripts DIR
// reads DIR/game.lua and DIR/shop.lua instead. The start log names the
// scripts' version: the first 12 hex digits of the SHA-256 of the sources
// in that order (cat game.lua shop.lua | sha256sum). A script that does not
// load (a syntax error, an error in its top-level code, a missing function)
// stops the start with one line naming file:line, exit status 1.
//
// Concurrency: gopher-lua's LState is not safe for concurrent use. The game
// has one, and uses it only with the world's lock held: every command runs
// under that lock already, so, like a Skynet service, the world runs one
// command at a time, and the Lua code never sees two. The functions are
// compiled once at start and looked up once per load; a command is one
// protected call of a Lua function on the same LState (L.CallByParam).
//
// Reload: on the supervisor's reload request (`supervisor ctl reload`,
// handoff.Worker.Reloads) the scripts are read again and patched in place
// with package luapatch under the world's lock: functions replaced, module
// state kept. It is all or nothing across the modules; the answer is READY
// with the new scripts' version, or RELOAD=failed naming file:line while
// the old rules go on.
//
// # Two shops
//
// The seed's bug: BUY does not check the balance, and coin can go negative.
// The fixed shop refuses with "ERR not enough coin". They are two versions
// of the shop script, scripts/shop.lua and scripts/shop_fixed.lua, so that
// an upgrade (or a reload) shows new code running on old state. The build
// tag fixedshop selects which one the binary embeds as its default
// (shop_buggy.go, shop_fixed.go); the version is set at build time:
//
//	go build -ldflags "-X main.version=v1" ./example-game/gameserver
//	go build -tags fixedshop -ldflags "-X main.version=v2" ./example-game/gameserver
//
// # Running
//
// Under the supervisor, in handover mode:
//
//	supervisor --mode handover --snapshot /var/lib/game/snapshot \
//	    --listen game=tcp://0.0.0.0:7000 -- gameserver
//
// It serves the passed socket named by --socket-name (default "game"), and
// saves to and restores from the supervisor's snapshot path. On its own it
// binds --listen (default 127.0.0.1:7000) and uses --snapshot PATH, if
// given, and saves on SIGTERM or SIGINT. Under a supervisor in overlap mode
// it works, but an upgrade disconnects every player, and the start line says
// so. Other flags: --scripts DIR (the rules; default: the embedded ones),
// --autosave (default 5s; 0: off), --stock (default
// 1000000), --handover-wait (default 2m: how long a worker started ahead of
// a handover waits for the previous one; the supervisor's own timeouts act
// first). Exit status: 0 after a handover or a shutdown, 1 when it cannot
// start, restore, save or hand over, 2 on bad flags. Logs go to stderr, one
// plain line each, prefixed "gameserver[PID]: ".
//
// # Data and logic
//
// The data is one struct, world (world.go): the player table (a slice of
// players and an index by id) and the shop's stock. The logic is the
// handlers (game.go), which run one command on it under its lock, and the
// rules in Lua that they call (above).
//
// The snapshot (snapshot.go) is written and read through package state:
// atomically, with a checksum, and streamed, one record per player, per
// stock entry and per session, never one buffer for the whole game. Its
// schema is 2: players have level and exp. Schema 1 had neither; restoring
// it migrates its players to level 1 with 0 exp, and the next save writes
// schema 2. A newer schema is refused (exit status 1), never half-read.
//
// Every start restores the snapshot if there is one, whatever the mode:
// state.OpenLatest falls back to the previous snapshot when the newest is
// truncated or damaged. The log says what was restored and how old it is
// ("restored autosave from 3.2s ago: 12 players, 0 connections resumed
// (...)", and when the newest was refused, why, and which file was used).
// Once it serves, it confirms the snapshot (Reader.Confirm), so that the
// previous one is dropped only once the new one has been read back.
//
// The state's moves are handoff.State's: the game gives it its restore
// (app.restore), its sessions' resumption (app.resumeAll) and its save
// (app.save), and State runs them at start, on a ticker and on the drain
// signal.
//
// Autosave (autosave.go): every --autosave, if anything changed, the data is
// copied under the lock, which takes a memmove of the player table (bags
// are copy-on-write, so the copy shares them safely), and written out after
// the lock is released: the game stops for the copy only, microseconds for
// thousands of players and some tens of milliseconds for a million
// (BenchmarkAutosaveCopy), never for the write. The copy is taken at one
// instant, so players and stock agree in every autosave.
// Each save is logged with its player count, changes and time. A crash (even
// kill -9) therefore loses at most one period; the supervisor restarts the
// worker, which restores the last autosave and says how old it is.
//
// # Handover
//
// A worker started ahead of a handover initialises (takes its listener, no
// accepting, no restoring) and waits in handoff.State.Start while the old
// worker still serves. The old worker, on the drain signal:
//
//  1. stops accepting (its copy of the listener stays open, its deadline in
//     the past; the supervisor keeps the socket, so new connections queue
//     in the kernel for the next worker);
//  2. stops every session: deadlines in the past unblock each one's read or
//     write; the command in progress is finished, and whatever of its reply
//     could not be written is kept; bytes read but not yet run (pipelined
//     commands, a partial line) are kept;
//  3. hands over (handoff.State.HandOver): the autosaves stop, a save in
//     progress discarded; the snapshot is saved: players, stock, and per
//     session its name (c0, c1, ...), the client's address, the logged-in
//     player, the unprocessed input, the unwritten output, and whether it
//     was closing; the connections are stored with the supervisor under
//     those names, up to 253 a datagram (handover.StoreConns), HANDOVER=saved
//     is said, and State waits until the supervisor has processed it all
//     (an sd_notify barrier); the worker exits 0.
//
// If the save fails (a full disk: ENOSPC), nothing is stored: HandOver
// says HANDOVER=failed with the reason and returns handoff.ErrSaveFailed,
// and the worker serves on. It logs "handover: ...; serving on: N sessions
// resumed, nobody disconnected", resumes every session where it stopped
// (its unwritten output, its unprocessed input), accepts again on the
// listener (stopped in step 1 by a deadline in the past, not closed, for
// this reason), and goes on autosaving; the next drain signal tries again.
// The supervisor reports that upgrade failed with kind save-failed.
//
// The new worker then restores (the collector off meanwhile: all that a
// restore allocates is kept), resumes each connection whose name and client
// address match a saved session (first writing its unwritten output, then
// running its unprocessed input, then reading on), sends READY=1, logs
// "handover: restored N players and M connections in T (snapshot T1,
// sessions T2; ...)", and accepts. So a reply already written is never
// repeated, and a command is never run twice nor lost. A rollback (the new
// build fails after the old one saved) starts the old build cold with the
// same snapshot and connections: it resumes them the same way, and tells
// each one that it restarted (the NOTICE line above).
package main
