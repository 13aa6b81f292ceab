package main

import (
	"fmt"
	"strconv"
	"strings"

	lua "github.com/yuin/gopher-lua"
)

// game runs one command line of a session on the world: it parses the
// line, and the rules (in Lua) decide what the command does to the data.
type game struct {
	world   *world
	rules   *rules // used only with world.mu held: one command at a time
	version string // in LOGIN and STATUS replies
	pid     int    // in STATUS replies

	luaVersion, luaPID lua.LValue // version and pid, made once for the rules
}

func newGame(w *world, r *rules, version string, pid int) *game {
	return &game{world: w, rules: r, version: version, pid: pid,
		luaVersion: lua.LString(version), luaPID: lua.LNumber(pid)}
}

// command is one verb of the protocol.
type command struct {
	usage string
	nargs int
	anon  bool // allowed before LOGIN
	run   func(g *game, who *string, args []string) string
}

var commands = map[string]command{
	"LOGIN":  {usage: "LOGIN <player-id>", nargs: 1, anon: true, run: (*game).login},
	"WORK":   {usage: "WORK", run: (*game).work},
	"BUY":    {usage: "BUY <item-id>", nargs: 1, run: (*game).buy},
	"STATUS": {usage: "STATUS", run: (*game).status},
	"STOCK":  {usage: "STOCK <item-id>", nargs: 1, run: (*game).stock},
	"SHOP":   {usage: "SHOP", run: (*game).shop},
	"QUIT":   {usage: "QUIT", anon: true},
}

// exec runs one line (without its "\n") for the session whose logged-in
// player is *who ("" before LOGIN), and returns the one-line reply, and
// whether the session ends once it is written.
func (g *game) exec(who *string, line []byte) (reply string, quit bool) {
	return g.execThen(who, line, nil)
}

// execThen is exec, and then, if not nil, is given the reply with the
// world still locked once the command has run (--live: its changes are
// committed to the region, with the session's record and the reply, in the
// same critical section).
func (g *game) execThen(who *string, line []byte, then func(reply string)) (reply string, quit bool) {
	reply, quit, run := g.parse(who, line)
	g.world.mu.Lock()
	defer g.world.mu.Unlock()
	if run != nil {
		reply = run()
	}
	if then != nil {
		then(reply)
	}
	return reply, quit
}

// replyBye is QUIT's reply, the only one after which the server closes the
// connection.
const replyBye = "BYE"

// parse checks a line: the reply to a line that is not a command to run,
// or the command, to run with the world locked.
func (g *game) parse(who *string, line []byte) (reply string, quit bool, run func() string) {
	fields := strings.Fields(string(line))
	if len(fields) == 0 {
		return "ERR empty line: send a command, such as STATUS", false, nil
	}
	cmd, ok := commands[fields[0]]
	switch {
	case !ok:
		return "ERR unknown command " + quote(fields[0]) + ": want LOGIN, WORK, BUY, STATUS, STOCK, SHOP or QUIT", false, nil
	case len(fields)-1 != cmd.nargs:
		return "ERR usage: " + cmd.usage, false, nil
	case cmd.run == nil:
		return replyBye, true, nil
	case !cmd.anon && *who == "":
		return "ERR not logged in: LOGIN <player-id> first", false, nil
	}
	return "", false, func() string { return cmd.run(g, who, fields[1:]) }
}

// quote shows a piece of input in an error, on one line and short.
func quote(s string) string {
	const max = 32
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}

// The handlers run with the world locked.

func (g *game) login(who *string, args []string) string {
	id := args[0]
	switch {
	case *who != "":
		return "ERR already logged in as " + *who
	case !validID(id):
		return "ERR bad player id " + quote(id) + ": want 1 to 64 characters of A-Z a-z 0-9 _ -"
	}
	p := g.world.player(id)
	*who = id
	return fmt.Sprintf("OK player=%s coin=%d version=%s", id, p.coin, g.version)
}

func (g *game) work(who *string, _ []string) string {
	p := g.world.player(*who)
	coin, exp, level, err := g.rules.doWork(p.coin, p.exp)
	if err != nil {
		return g.failed(err)
	}
	p.coin, p.exp, p.level = coin, exp, level
	g.world.changes++
	return "OK coin=" + strconv.FormatInt(p.coin, 10)
}

func (g *game) buy(who *string, args []string) string {
	item, err := parseItem(args[0])
	if err != nil {
		return "ERR " + err.Error()
	}
	remain := g.world.remain(item)
	p := g.world.player(*who)
	price, refused, err := g.rules.doBuy(item, p.coin, remain)
	switch {
	case err != nil:
		return g.failed(err)
	case refused != "":
		return "ERR " + refused
	}
	p.coin -= price
	p.add(item)
	g.world.stock[item] = remain - 1
	g.world.changes++
	if g.world.live != nil {
		g.world.live.dirty = append(g.world.live.dirty, item)
	}
	return fmt.Sprintf("OK coin=%d item=%d count=%d remain=%d", p.coin, item, p.count(item), remain-1)
}

func (g *game) status(who *string, _ []string) string {
	p := g.world.player(*who)
	var bag []byte
	for i, b := range p.bag {
		if i > 0 {
			bag = append(bag, ',')
		}
		bag = strconv.AppendInt(append(strconv.AppendInt(bag, int64(b.item), 10), ':'), b.count, 10)
	}
	reply, err := g.rules.doStatus(p.id, string(bag), p.coin, g.luaVersion, g.luaPID)
	if err != nil {
		return g.failed(err)
	}
	return reply
}

func (g *game) stock(_ *string, args []string) string {
	item, err := parseItem(args[0])
	if err != nil {
		return "ERR " + err.Error()
	}
	unknown, err := g.rules.doUnknown(item)
	switch {
	case err != nil:
		return g.failed(err)
	case unknown != "":
		return "ERR " + unknown
	}
	return fmt.Sprintf("OK item=%d remain=%d", item, g.world.remain(item))
}

func (g *game) shop(_ *string, _ []string) string {
	reply, err := g.rules.doReport()
	if err != nil {
		return g.failed(err)
	}
	return reply
}

// failed is the reply to a command whose script failed: the command
// changed nothing, and the error (file:line first) goes to the client.
func (g *game) failed(err error) string {
	return "ERR " + err.Error()
}

// parseItem parses an item id: digits only. Whether the shop sells it is
// the rules' to say.
func parseItem(s string) (int, error) {
	id, err := strconv.Atoi(s)
	if err != nil || len(s) > 9 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("bad item id %s: want a number, such as 1001", quote(s))
	}
	return id, nil
}
