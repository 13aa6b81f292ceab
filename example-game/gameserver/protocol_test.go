package main

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// step sends raw bytes on one of a case's connections and expects replies.
// A reply pattern is literal except for {n} (an integer), {pid} and
// {version}; closed means the server closes the connection after them.
type step struct {
	conn   int
	send   string
	want   []string
	closed bool
}

func say(send string, want ...string) step { return step{send: send + "\n", want: want} }

var (
	errLogin    = "ERR not logged in: LOGIN <player-id> first"
	errUnknown  = "ERR unknown item %d: the shop sells 1001 (potion), 1002 (gourd)"
	errCommands = ": want LOGIN, WORK, BUY, STATUS, STOCK, SHOP or QUIT"
	long64      = strings.Repeat("p", 64)
)

var protocolCases = []struct {
	name  string
	steps []step
}{
	{"login new player", []step{
		say("LOGIN alice", "OK player=alice coin=100 version={version}"),
		say("STATUS", "OK player=alice coin=100 bag= version={version} pid={pid}"), // an empty bag
	}},
	{"login id rules", []step{
		say("LOGIN", "ERR usage: LOGIN <player-id>"),
		say("LOGIN a b", "ERR usage: LOGIN <player-id>"),
		say("LOGIN a.b", `ERR bad player id "a.b": want 1 to 64 characters of A-Z a-z 0-9 _ -`),
		say("LOGIN é", `ERR bad player id "é": want 1 to 64 characters of A-Z a-z 0-9 _ -`),
		say("LOGIN "+long64+"x", `ERR bad player id "`+long64[:32]+`"...: want 1 to 64 characters of A-Z a-z 0-9 _ -`),
		say("LOGIN "+long64, "OK player="+long64+" coin=100 version={version}"),
		say("LOGIN Az09_-", "ERR already logged in as "+long64),
	}},
	{"ids are case-sensitive", []step{
		say("LOGIN Carol", "OK player=Carol coin=100 version={version}"),
		say("WORK", "OK coin=105"),
		{conn: 1, send: "LOGIN carol\n", want: []string{"OK player=carol coin=100 version={version}"}},
	}},
	{"commands before login", []step{
		say("WORK", errLogin),
		say("BUY 1001", errLogin),
		say("STATUS", errLogin),
		say("STOCK 1001", errLogin),
		say("BUY x", errLogin), // the login comes first, then the argument
	}},
	{"quit before login", []step{
		{send: "QUIT\n", want: []string{"BYE"}, closed: true},
	}},
	{"quit after login", []step{
		say("LOGIN dave", "OK player=dave coin=100 version={version}"),
		say("QUIT now", "ERR usage: QUIT"),
		{send: "QUIT\nWORK\n", want: []string{"BYE"}, closed: true}, // nothing after QUIT runs
	}},
	{"unknown commands and empty lines", []step{
		say("DANCE", `ERR unknown command "DANCE"`+errCommands),
		say("work", `ERR unknown command "work"`+errCommands), // commands are upper case
		say("", "ERR empty line: send a command, such as STATUS"),
		say("   \t ", "ERR empty line: send a command, such as STATUS"),
		say("\x00\xff", `ERR unknown command "\x00\xff"`+errCommands),
		say(strings.Repeat("Z", 40), `ERR unknown command "`+strings.Repeat("Z", 32)+`"...`+errCommands),
	}},
	{"work and arguments", []step{
		say("LOGIN erin", "OK player=erin coin=100 version={version}"),
		say("WORK", "OK coin=105"),
		say("  WORK  ", "OK coin=110"),
		{send: "WORK\r\n", want: []string{"OK coin=115"}},
		say("WORK hard", "ERR usage: WORK"),
		say("STATUS now", "ERR usage: STATUS"),
	}},
	{"buy and status", []step{
		say("LOGIN frank", "OK player=frank coin=100 version={version}"),
		say("BUY 1002", "OK coin=98 item=1002 count=1 remain={n}"),
		say("BUY 1001", "OK coin=88 item=1001 count=1 remain={n}"),
		say("BUY 1002", "OK coin=86 item=1002 count=2 remain={n}"),
		say("STATUS", "OK player=frank coin=86 bag=1001:1,1002:2 version={version} pid={pid}"),
	}},
	{"buy errors", []step{
		say("LOGIN gina", "OK player=gina coin=100 version={version}"),
		say("BUY", "ERR usage: BUY <item-id>"),
		say("BUY 1001 1002", "ERR usage: BUY <item-id>"),
		say("BUY potion", `ERR bad item id "potion": want a number, such as 1001`),
		say("BUY -1001", `ERR bad item id "-1001": want a number, such as 1001`),
		say("BUY +1001", `ERR bad item id "+1001": want a number, such as 1001`),
		say("BUY 99999999999999999999", `ERR bad item id "99999999999999999999": want a number, such as 1001`),
		say("BUY 1003", fmt.Sprintf(errUnknown, 1003)),
		say("BUY 0", fmt.Sprintf(errUnknown, 0)),
		say("STATUS", "OK player=gina coin=100 bag= version={version} pid={pid}"), // nothing was bought
	}},
	{"stock", []step{
		say("LOGIN hank", "OK player=hank coin=100 version={version}"),
		say("STOCK 1001", "OK item=1001 remain={n}"),
		say("STOCK 1002", "OK item=1002 remain={n}"),
		say("STOCK", "ERR usage: STOCK <item-id>"),
		say("STOCK x", `ERR bad item id "x": want a number, such as 1001`),
		say("STOCK 7", fmt.Sprintf(errUnknown, 7)),
	}},
	{"pipelined and split commands", []step{
		{send: "LOGIN ivy\nWORK\nWORK\nSTATUS\n", want: []string{
			"OK player=ivy coin=100 version={version}", "OK coin=105", "OK coin=110",
			"OK player=ivy coin=110 bag= version={version} pid={pid}"}},
		{send: "WO"},
		{send: "RK\nBU"},
		{send: "Y 1002\n", want: []string{"OK coin=115", "OK coin=113 item=1002 count=1 remain={n}"}},
	}},
	{"one player on two connections shares state", []step{
		say("LOGIN jo", "OK player=jo coin=100 version={version}"),
		{conn: 1, send: "LOGIN jo\n", want: []string{"OK player=jo coin=100 version={version}"}},
		say("WORK", "OK coin=105"),
		{conn: 1, send: "BUY 1001\n", want: []string{"OK coin=95 item=1001 count=1 remain={n}"}},
		say("STATUS", "OK player=jo coin=95 bag=1001:1 version={version} pid={pid}"),
		{conn: 1, send: "QUIT\n", want: []string{"BYE"}, closed: true},
		say("WORK", "OK coin=100"), // the other connection goes on
	}},
	{"a line of 1024 bytes is allowed", []step{
		say(strings.Repeat("A", 1024), `ERR unknown command "`+strings.Repeat("A", 32)+`"...`+errCommands),
		say("LOGIN "+strings.Repeat(" ", 1024-len("LOGIN kim"))+"kim", "OK player=kim coin=100 version={version}"),
	}},
	{"a line over 1 KiB closes the connection", []step{
		say("LOGIN lee", "OK player=lee coin=100 version={version}"),
		{send: strings.Repeat("B", 1025) + "\nWORK\n", want: []string{"ERR line too long: at most 1024 bytes"}, closed: true},
	}},
	{"an endless line is refused before its end", []step{
		{send: strings.Repeat("C", 5000), want: []string{"ERR line too long: at most 1024 bytes"}, closed: true},
	}},
}

// TestProtocol runs every command and every error case on a real server.
func TestProtocol(t *testing.T) {
	p := startGame(t, "", "--autosave", "0")
	pid := strconv.Itoa(p.cmd.Process.Pid)
	for _, tc := range protocolCases {
		t.Run(tc.name, func(t *testing.T) {
			conns := []*client{dial(t, p.addr), dial(t, p.addr)}
			for i, st := range tc.steps {
				c := conns[st.conn]
				if err := c.write(st.send); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				for _, want := range st.want {
					got, err := c.recv()
					if err != nil {
						t.Fatalf("step %d %q: reply: %v", i, st.send, err)
					}
					if !replyPattern(want, "test", pid).MatchString(got) {
						t.Fatalf("step %d %q:\n got %q\nwant %q", i, st.send, got, want)
					}
				}
				if st.closed {
					c.closed(t)
				}
			}
		})
	}
}

func replyPattern(want, version, pid string) *regexp.Regexp {
	re := regexp.QuoteMeta(want)
	re = strings.ReplaceAll(re, `\{n\}`, `-?[0-9]+`)
	re = strings.ReplaceAll(re, `\{pid\}`, pid)
	re = strings.ReplaceAll(re, `\{version\}`, regexp.QuoteMeta(version))
	return regexp.MustCompile("^" + re + "$")
}

// TestCoinAndStock checks the arithmetic: 100 coins to start, +5 per WORK,
// the price per BUY, and one shop-wide stock per good that runs out.
func TestCoinAndStock(t *testing.T) {
	p := startGame(t, "", "--autosave", "0", "--stock", "5")
	a, b := dial(t, p.addr), dial(t, p.addr)
	a.expect(t, "LOGIN ann", "OK player=ann coin=100 version=test")
	b.expect(t, "LOGIN bea", "OK player=bea coin=100 version=test")
	for i := 1; i <= 3; i++ {
		a.expect(t, "WORK", fmt.Sprintf("OK coin=%d", 100+5*i))
	}
	a.expect(t, "BUY 1001", "OK coin=105 item=1001 count=1 remain=4")
	a.expect(t, "BUY 1001", "OK coin=95 item=1001 count=2 remain=3")
	b.expect(t, "BUY 1001", "OK coin=90 item=1001 count=1 remain=2")
	b.expect(t, "BUY 1002", "OK coin=88 item=1002 count=1 remain=4")
	b.expect(t, "STOCK 1001", "OK item=1001 remain=2")
	a.expect(t, "BUY 1001", "OK coin=85 item=1001 count=3 remain=1")
	b.expect(t, "BUY 1001", "OK coin=78 item=1001 count=2 remain=0")
	a.expect(t, "BUY 1001", "ERR out of stock: item 1001")
	a.expect(t, "STOCK 1001", "OK item=1001 remain=0")
	a.expect(t, "BUY 1002", "OK coin=83 item=1002 count=1 remain=3")
	pid := p.cmd.Process.Pid
	a.expect(t, "STATUS", fmt.Sprintf("OK player=ann coin=83 bag=1001:3,1002:1 version=test pid=%d", pid))
	b.expect(t, "STATUS", fmt.Sprintf("OK player=bea coin=78 bag=1001:2,1002:1 version=test pid=%d", pid))
}

// TestSharedPlayerConcurrent: one player on several connections at once
// shares one row; no update is lost.
func TestSharedPlayerConcurrent(t *testing.T) {
	p := startGame(t, "", "--autosave", "0")
	const conns, works = 4, 200
	cs := make([]*client, conns)
	for i := range cs {
		cs[i] = dial(t, p.addr)
		cs[i].expect(t, "LOGIN sam", fmt.Sprintf("OK player=sam coin=%d version=test", 100))
	}
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range works {
				if err := c.write("WORK\n"); err != nil {
					errs <- err
					return
				}
				if r, err := c.recv(); err != nil || !strings.HasPrefix(r, "OK coin=") {
					errs <- fmt.Errorf("WORK: %q, %v", r, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	want := fmt.Sprintf("OK player=sam coin=%d bag= version=test pid=%d", 100+5*conns*works, p.cmd.Process.Pid)
	cs[0].expect(t, "STATUS", want)
}

// TestBuyBuggyVsFixed runs the two builds: the buggy one lets coin go
// negative, the fixed one answers "ERR not enough coin". They differ in
// code (the fixedshop build tag), not in a flag.
func TestBuyBuggyVsFixed(t *testing.T) {
	for _, tc := range []struct {
		bin, version string
		fixed        bool
	}{{bins.buggy, buggyVersion, false}, {bins.fixed, fixedVersion, true}} {
		t.Run(tc.version, func(t *testing.T) {
			p := startGame(t, tc.bin, "--autosave", "0")
			rule := "buggy shop: BUY does not check the balance"
			if tc.fixed {
				rule = "fixed shop: BUY checks the balance"
			}
			p.log.wait(t, new(int), regexp.MustCompile(regexp.QuoteMeta(rule)))
			c := dial(t, p.addr)
			c.expect(t, "LOGIN poor", "OK player=poor coin=100 version="+tc.version)
			for i := 1; i <= 10; i++ {
				c.expect(t, "BUY 1001", fmt.Sprintf("OK coin=%d item=1001 count=%d remain=%d", 100-10*i, i, 1_000_000-i))
			}
			status := "OK player=poor coin=%d bag=1001:%d version=" + tc.version + " pid=" + strconv.Itoa(p.cmd.Process.Pid)
			if tc.fixed {
				c.expect(t, "BUY 1001", "ERR not enough coin")
				c.expect(t, "BUY 1002", "ERR not enough coin")
				c.expect(t, "STATUS", fmt.Sprintf(status, 0, 10))
				c.expect(t, "STOCK 1001", "OK item=1001 remain=999990")
				c.expect(t, "WORK", "OK coin=5")
				c.expect(t, "BUY 1002", "OK coin=3 item=1002 count=1 remain=999999")
				return
			}
			c.expect(t, "BUY 1001", "OK coin=-10 item=1001 count=11 remain=999989")
			c.expect(t, "BUY 1002", "OK coin=-12 item=1002 count=1 remain=999999")
			c.expect(t, "STATUS", fmt.Sprintf(strings.Replace(status, "bag=1001:%d", "bag=1001:%d,1002:1", 1), -12, 11))
		})
	}
}
