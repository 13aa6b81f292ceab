package game

import (
	"bufio"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The game's rules, as the issue states them.
const (
	startCoin = 100
	workPay   = 5
	potion    = 1001
	gourd     = 1002
)

var prices = map[int]int64{potion: 10, gourd: 2}

// client is one connection to the game: a command line out, a reply line
// in, each bounded by waitBound.
type client struct {
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitBound)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{conn: c, r: bufio.NewReader(c)}
}

// do sends cmd and returns the reply, without its "\n". The game's
// notices (noticePrefix), lines it sends on its own after a cold start, are
// not replies: do passes over them (notices.filter keeps them for a test
// that checks them).
func (c *client) do(cmd string) (string, error) {
	c.conn.SetDeadline(time.Now().Add(waitBound))
	if _, err := c.conn.Write([]byte(cmd + "\n")); err != nil {
		return "", fmt.Errorf("%s: write: %w", cmd, err)
	}
	for {
		reply, err := c.r.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("%s: read: %w (got %q)", cmd, err, reply)
		}
		if !strings.HasPrefix(reply, noticePrefix) {
			return strings.TrimSuffix(reply, "\n"), nil
		}
	}
}

// must is do that fails the test on an error.
func (c *client) must(t *testing.T, cmd string) string {
	t.Helper()
	reply, err := c.do(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return reply
}

// expect fails the test unless cmd gets the reply want.
func (c *client) expect(t *testing.T, cmd, want string) {
	t.Helper()
	if got := c.must(t, cmd); got != want {
		t.Fatalf("%s: got %q, want %q", cmd, got, want)
	}
}

// build is which shop rule answers: known only between upgrades.
type build struct {
	known   bool // false while an upgrade (or a rollback) is under way
	fixed   bool // the fixed build's BUY: ERR not enough coin
	version string
}

// era is the current build as the test knows it; a bot that sent a command
// and read its reply within one known era knows which build answered. The
// test sets a new era before each SIGHUP and after each upgrade's outcome:
// in handover mode the old worker stops reading before the new one starts,
// so a command sent after the outcome was logged is run by the new build.
type era struct{ p atomic.Pointer[build] }

func (e *era) set(b build) { e.p.Store(&b) }

// ledger records what every bot saw of the shop: each purchase's remain,
// and how often each build's BUY rule showed.
type ledger struct {
	stock   int64 // each good's stock at the first start
	mu      sync.Mutex
	remains map[int][]int64
	refused atomic.Int64 // ERR not enough coin
	owing   atomic.Int64 // purchases that took coin below zero
}

func newLedger(stock int64) *ledger {
	return &ledger{stock: stock, remains: make(map[int][]int64)}
}

func (l *ledger) bought(item int, remain int64) {
	l.mu.Lock()
	l.remains[item] = append(l.remains[item], remain)
	l.mu.Unlock()
}

// check verifies that the shop's stock is continuous: the remains seen
// across all bots are exactly stock-1, stock-2, ... down to the last, with
// no gap (a purchase lost) and no repeat (one run twice, or an older stock
// restored), and that STOCK agrees.
func (l *ledger) check(t *testing.T, c *client) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, item := range []int{potion, gourd} {
		got := slices.Clone(l.remains[item])
		slices.SortFunc(got, func(a, b int64) int { return int(b - a) }) // decreasing
		for i, r := range got {
			if want := l.stock - 1 - int64(i); r != want {
				t.Errorf("item %d: %d purchases; the %dth remain in order is %d, want %d (a purchase lost or run twice); first ones %v",
					item, len(got), i+1, r, want, got[:min(len(got), 8)])
				break
			}
		}
		c.expect(t, fmt.Sprintf("STOCK %d", item), fmt.Sprintf("OK item=%d remain=%d", item, l.stock-int64(len(got))))
	}
}

// bot is a player on one connection whose coin and bag follow from its own
// replies alone.
type bot struct {
	id      string
	c       *client
	coin    int64
	bag     map[int]int64
	ledger  *ledger
	era     *era
	done    atomic.Int64 // commands completed
	changes int          // changes to the game's data: its first login, WORKs, purchases
}

var buyRe = regexp.MustCompile(`^OK coin=(-?\d+) item=(\d+) count=(\d+) remain=(\d+)$`)

func newBot(t *testing.T, addr, id string, l *ledger, e *era, version string) *bot {
	t.Helper()
	b := &bot{id: id, c: dial(t, addr), coin: startCoin, bag: make(map[int]int64), ledger: l, era: e, changes: 1}
	b.c.expect(t, "LOGIN "+id, fmt.Sprintf("OK player=%s coin=%d version=%s", id, startCoin, version))
	return b
}

// step sends one command and checks its reply against what the bot knows.
func (b *bot) step(cmd string) error {
	before := b.era.p.Load()
	reply, err := b.c.do(cmd)
	if err != nil {
		return fmt.Errorf("%s: connection lost: %w", b.id, err)
	}
	var by *build // the build that answered, when known
	if after := b.era.p.Load(); after == before && before.known {
		by = before
	}
	if err := b.apply(cmd, reply, by); err != nil {
		return err
	}
	b.done.Add(1)
	return nil
}

func (b *bot) apply(cmd, reply string, by *build) error {
	if cmd == "WORK" {
		if want := fmt.Sprintf("OK coin=%d", b.coin+workPay); reply != want {
			return fmt.Errorf("%s: WORK: got %q, want %q", b.id, reply, want)
		}
		b.coin += workPay
		b.changes++
		return nil
	}
	item, _ := strconv.Atoi(strings.TrimPrefix(cmd, "BUY "))
	price := prices[item]
	if reply == "ERR not enough coin" {
		if b.coin >= price || by != nil && !by.fixed {
			return fmt.Errorf("%s: %s with %d coins refused (build %+v)", b.id, cmd, b.coin, by)
		}
		b.ledger.refused.Add(1)
		return nil
	}
	m := buyRe.FindStringSubmatch(reply)
	want := fmt.Sprintf("OK coin=%d item=%d count=%d remain=", b.coin-price, item, b.bag[item]+1)
	if m == nil || !strings.HasPrefix(reply, want) {
		return fmt.Errorf("%s: %s with %d coins: got %q, want %q...", b.id, cmd, b.coin, reply, want)
	}
	if b.coin < price {
		if by != nil && by.fixed {
			return fmt.Errorf("%s: the fixed build sold %s to a player with %d coins: %q", b.id, cmd, b.coin, reply)
		}
		b.ledger.owing.Add(1)
	}
	remain, _ := strconv.ParseInt(m[4], 10, 64)
	b.coin -= price
	b.bag[item]++
	b.changes++
	b.ledger.bought(item, remain)
	return nil
}

// play sends WORK and BUY, one at a time, until stop is closed. The mix
// spends more than it earns, so that coin runs out: the buggy build then
// lets it go negative and the fixed one refuses.
func (b *bot) play(seed int, stop <-chan struct{}) error {
	mix := [...]string{"WORK", "WORK", "BUY 1001", "BUY 1001", "BUY 1002"}
	for i := seed; ; i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		if err := b.step(mix[(i*7+i/5)%len(mix)]); err != nil {
			return err
		}
	}
}

// status is what STATUS should answer for the bot.
func (b *bot) status(version string, pid int) string {
	var bag []string
	for _, item := range []int{potion, gourd} {
		if n := b.bag[item]; n > 0 {
			bag = append(bag, fmt.Sprintf("%d:%d", item, n))
		}
	}
	return fmt.Sprintf("OK player=%s coin=%d bag=%s version=%s pid=%d", b.id, b.coin, strings.Join(bag, ","), version, pid)
}

// team is bots playing in the background.
type team struct {
	bots   []*bot
	stop   chan struct{}
	wg     sync.WaitGroup
	failed chan error
}

func startTeam(bots []*bot) *team {
	tm := &team{bots: bots, stop: make(chan struct{}), failed: make(chan error, len(bots))}
	for i, b := range bots {
		tm.wg.Add(1)
		go func() {
			defer tm.wg.Done()
			if err := b.play(i, tm.stop); err != nil {
				tm.failed <- err
			}
		}()
	}
	return tm
}

// halt stops the bots and returns the first error one of them met.
func (tm *team) halt() error {
	select {
	case <-tm.stop:
	default:
		close(tm.stop)
	}
	tm.wg.Wait()
	select {
	case err := <-tm.failed:
		return err
	default:
		return nil
	}
}

// marks returns each bot's count of completed commands.
func (tm *team) marks() []int64 {
	m := make([]int64, len(tm.bots))
	for i, b := range tm.bots {
		m[i] = b.done.Load()
	}
	return m
}

// waitPast waits until every bot has completed n commands past marks:
// every connection is alive and served. It fails the test as soon as a bot
// fails.
func (tm *team) waitPast(t *testing.T, marks []int64, n int64) {
	t.Helper()
	deadline := time.Now().Add(waitBound)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < len(tm.bots); {
		if tm.bots[i].done.Load() >= marks[i]+n {
			i++
			continue
		}
		select {
		case err := <-tm.failed:
			tm.failed <- err // for halt
			t.Fatal(err)
		case <-tick.C:
			if time.Now().After(deadline) {
				t.Fatalf("bot %s completed %d commands in %v, want %d", tm.bots[i].id, tm.bots[i].done.Load()-marks[i], waitBound, n)
			}
		}
	}
}

// startPlaying logs in a probe and n bots on the buggy build, with a fresh
// ledger, and has the bots play until each has done 5 commands. The bots
// stop at the end of the test, if not before.
func startPlaying(t *testing.T, addr string, n int) (*ledger, *era, *bot, []*bot, *team) {
	t.Helper()
	l, e := newLedger(bigStock), &era{}
	e.set(build{known: true, version: buggyVersion})
	probe := newBot(t, addr, "probe", l, e, buggyVersion)
	bots := make([]*bot, n)
	for i := range bots {
		bots[i] = newBot(t, addr, fmt.Sprintf("bot%03d", i), l, e, buggyVersion)
	}
	tm := startTeam(bots)
	t.Cleanup(func() { tm.halt() })
	tm.waitPast(t, tm.marks(), 5)
	return l, e, probe, bots, tm
}
