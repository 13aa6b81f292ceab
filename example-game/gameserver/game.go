package main

import (
	"fmt"
	"strconv"
	"strings"
)

// game is the logic: it runs one command line of a session on the world.
type game struct {
	world   *world
	version string // in LOGIN and STATUS replies
	pid     int    // in STATUS replies
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
	"QUIT":   {usage: "QUIT", anon: true},
}

// exec runs one line (without its "\n") for the session whose logged-in
// player is *who ("" before LOGIN), and returns the one-line reply, and
// whether the session ends once it is written.
func (g *game) exec(who *string, line []byte) (reply string, quit bool) {
	fields := strings.Fields(string(line))
	if len(fields) == 0 {
		return "ERR empty line: send a command, such as STATUS", false
	}
	cmd, ok := commands[fields[0]]
	switch {
	case !ok:
		return "ERR unknown command " + quote(fields[0]) + ": want LOGIN, WORK, BUY, STATUS, STOCK or QUIT", false
	case len(fields)-1 != cmd.nargs:
		return "ERR usage: " + cmd.usage, false
	case cmd.run == nil:
		return "BYE", true
	case !cmd.anon && *who == "":
		return "ERR not logged in: LOGIN <player-id> first", false
	}
	g.world.mu.Lock()
	defer g.world.mu.Unlock()
	return cmd.run(g, who, fields[1:]), false
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
	p.coin += workPay
	p.exp += workExp
	p.level = 1 + p.exp/expPerLevel
	g.world.changes++
	return fmt.Sprintf("OK coin=%d", p.coin)
}

func (g *game) buy(who *string, args []string) string {
	item, err := findItem(args[0])
	if err != nil {
		return "ERR " + err.Error()
	}
	remain := g.world.stock[item.id]
	if remain <= 0 {
		return fmt.Sprintf("ERR out of stock: item %d", item.id)
	}
	p := g.world.player(*who)
	if err := checkBalance(p.coin, item.price); err != nil {
		return "ERR " + err.Error()
	}
	p.coin -= item.price
	p.add(item.id)
	g.world.stock[item.id] = remain - 1
	g.world.changes++
	return fmt.Sprintf("OK coin=%d item=%d count=%d remain=%d", p.coin, item.id, p.count(item.id), remain-1)
}

func (g *game) status(who *string, _ []string) string {
	p := g.world.player(*who)
	bag := make([]string, len(p.bag))
	for i, b := range p.bag {
		bag[i] = fmt.Sprintf("%d:%d", b.item, b.count)
	}
	return fmt.Sprintf("OK player=%s coin=%d bag=%s version=%s pid=%d",
		p.id, p.coin, strings.Join(bag, ","), g.version, g.pid)
}

func (g *game) stock(_ *string, args []string) string {
	item, err := findItem(args[0])
	if err != nil {
		return "ERR " + err.Error()
	}
	return fmt.Sprintf("OK item=%d remain=%d", item.id, g.world.stock[item.id])
}

// findItem parses an item id (digits only) and finds it in the catalogue.
func findItem(s string) (good, error) {
	id, err := strconv.Atoi(s)
	if err != nil || len(s) > 9 || strings.TrimLeft(s, "0123456789") != "" {
		return good{}, fmt.Errorf("bad item id %s: want a number, such as 1001", quote(s))
	}
	g, ok := findGood(id)
	if !ok {
		return good{}, fmt.Errorf("unknown item %d: the shop sells %s", id, catalogue())
	}
	return g, nil
}
