package game

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The notices of a session resumed after a crash restart under --live
// (the game's doc.go): exactly one, before any reply of the restarted
// worker. noticeApplied names the command whose effect was committed when
// the worker died and whose reply may not have been written: a bot still
// waiting for that reply gets none, and counts the command as applied. After
// noticeNothingLost, every command the bot sent and got no reply for is run
// and answered as usual.
const noticeNothingLost = "NOTICE restarted: nothing lost"

var noticeAppliedRe = regexp.MustCompile(`^NOTICE restarted: your last command "(.*)" was applied, its reply may be lost; send STATUS to resync$`)

var (
	statusRe = regexp.MustCompile(`^OK player=(\S+) coin=(-?\d+) bag=(\S*) version=(\S+) pid=(\d+)$`)
	stockRe  = regexp.MustCompile(`^OK item=(\d+) remain=(\d+)$`)
)

// liveBot is a player on one connection, kept for the whole test, whose
// model of its coin and bag follows from its own replies and the restart
// notices alone. Its goroutine owns the model; the test reads the atomics
// while it plays, and the rest after the team has halted.
type liveBot struct {
	id     string
	conn   net.Conn // never redialled: an error on it ends the bot
	r      *bufio.Reader
	coin   int64
	bag    map[int]int64
	earned int64 // coins from WORK
	spent  int64 // coins paid for goods
	// remains are the remain values of this bot's purchases whose reply it
	// got; lost counts those it took as applied from a notice.
	remains map[int][]int64
	lost    int
	stale   int      // notices that named the command answered before the one awaited
	last    string   // the last command whose reply the bot got
	seen    []string // the last lines sent (">") and received ("<"), for errors
	status  bool     // a notice came: STATUS is next, to check the model

	done     atomic.Int64 // commands settled
	notices  atomic.Int64 // restart notices received
	checked  atomic.Int64 // the notice count at the last STATUS that matched the model
	checkPID atomic.Int64 // the worker that answered that STATUS
}

func newLiveBot(t *testing.T, addr, id string) *liveBot {
	t.Helper()
	c := dial(t, addr)
	b := &liveBot{id: id, conn: c.conn, r: c.r, coin: startCoin, bag: map[int]int64{}, remains: map[int][]int64{}}
	want := fmt.Sprintf("OK player=%s coin=%d version=%s", id, startCoin, fixedVersion)
	if got, err := b.exchange("LOGIN " + id); err != nil || got != want {
		t.Fatalf("%s: LOGIN: got %q (%v), want %q", id, got, err, want)
	}
	return b
}

// note keeps line in the bot's recent history.
func (b *liveBot) note(dir, line string) {
	if len(b.seen) == 12 {
		b.seen = b.seen[1:]
	}
	b.seen = append(b.seen, dir+" "+line)
}

// failf is an error naming the bot, its model and what it last saw.
func (b *liveBot) failf(format string, args ...any) error {
	return fmt.Errorf("%s (model coin=%d bag=%s, %d notices): %s; its last lines: %s",
		b.id, b.coin, b.bagString(), b.notices.Load(), fmt.Sprintf(format, args...), strings.Join(b.seen, " | "))
}

// exchange sends line and returns the next line received, which may be a
// notice, for the checks outside play (bots halted, no kill under way).
func (b *liveBot) exchange(line string) (string, error) {
	if err := b.send(line); err != nil {
		return "", err
	}
	return b.receive()
}

func (b *liveBot) send(line string) error {
	b.conn.SetDeadline(time.Now().Add(waitBound))
	b.note(">", line)
	if _, err := b.conn.Write([]byte(line + "\n")); err != nil {
		return b.failf("%s: write: %v: disconnected", line, err)
	}
	return nil
}

func (b *liveBot) receive() (string, error) {
	l, err := b.r.ReadString('\n')
	if err != nil {
		return "", b.failf("read: %v (got %q): disconnected", err, l)
	}
	l = strings.TrimSuffix(l, "\n")
	b.note("<", l)
	return l, nil
}

// step sends cmd and settles it: its reply checked against the model and
// applied, or, when a notice says that cmd was applied and its reply lost,
// its effect taken from the model.
func (b *liveBot) step(cmd string) error {
	if err := b.send(cmd); err != nil {
		return err
	}
	for {
		l, err := b.receive()
		if err != nil {
			return err
		}
		if !strings.HasPrefix(l, noticePrefix) {
			return b.settle(cmd, l)
		}
		lost, err := b.notice(cmd, l)
		if err != nil {
			return err
		}
		if lost {
			b.applied(cmd)
			return nil
		}
	}
}

// notice handles a restart notice received while waiting for cmd's reply;
// lost says that the notice names cmd: no reply will come for it.
func (b *liveBot) notice(cmd, l string) (lost bool, err error) {
	b.notices.Add(1)
	b.status = true
	if l == noticeNothingLost {
		return false, nil
	}
	m := noticeAppliedRe.FindStringSubmatch(l)
	switch {
	case m == nil:
		return false, b.failf("waiting for %q's reply, got the notice %q: neither %q nor the form %s", cmd, l, noticeNothingLost, noticeAppliedRe)
	case m[1] == cmd:
		return true, nil
	case m[1] == b.last:
		b.stale++
		return false, nil // the bot got its reply before the crash
	}
	return false, b.failf("waiting for %q's reply (the command before, answered, was %q), got %q: it names neither", cmd, b.last, l)
}

// settle checks reply against what the model expects of cmd, and applies it.
func (b *liveBot) settle(cmd, reply string) error {
	b.last = cmd
	switch {
	case cmd == "WORK":
		if want := fmt.Sprintf("OK coin=%d", b.coin+workPay); reply != want {
			return b.failf("WORK: got %q, want %q", reply, want)
		}
		b.coin += workPay
		b.earned += workPay
	case cmd == "STATUS":
		return b.checkStatus(reply)
	default:
		item, _ := strconv.Atoi(strings.TrimPrefix(cmd, "BUY "))
		price := prices[item]
		if b.coin < price {
			if reply != "ERR not enough coin" {
				return b.failf("%s with %d coins (price %d): got %q, want %q", cmd, b.coin, price, reply, "ERR not enough coin")
			}
			return nil
		}
		want := fmt.Sprintf("OK coin=%d item=%d count=%d remain=", b.coin-price, item, b.bag[item]+1)
		m := buyRe.FindStringSubmatch(reply)
		if m == nil || !strings.HasPrefix(reply, want) {
			return b.failf("%s with %d coins: got %q, want %q...", cmd, b.coin, reply, want)
		}
		remain, _ := strconv.ParseInt(m[4], 10, 64)
		b.buy(item)
		b.remains[item] = append(b.remains[item], remain)
	}
	return nil
}

// applied applies cmd, which a notice said was applied, as the model says
// it would have been.
func (b *liveBot) applied(cmd string) {
	b.lost++
	switch {
	case cmd == "WORK":
		b.coin += workPay
		b.earned += workPay
	case strings.HasPrefix(cmd, "BUY "):
		item, _ := strconv.Atoi(strings.TrimPrefix(cmd, "BUY "))
		if b.coin >= prices[item] {
			b.buy(item)
		}
	}
	// STATUS changes nothing: the next command is STATUS again.
}

func (b *liveBot) buy(item int) {
	b.coin -= prices[item]
	b.spent += prices[item]
	b.bag[item]++
}

// checkStatus checks a STATUS reply against the model and notes which
// worker answered.
func (b *liveBot) checkStatus(reply string) error {
	m := statusRe.FindStringSubmatch(reply)
	want := fmt.Sprintf("OK player=%s coin=%d bag=%s version=%s pid=", b.id, b.coin, b.bagString(), fixedVersion)
	if m == nil || !strings.HasPrefix(reply, want) {
		return b.failf("STATUS: got %q, want %q and a pid", reply, want)
	}
	pid, _ := strconv.ParseInt(m[5], 10, 64)
	b.status = false
	b.checkPID.Store(pid)
	b.checked.Store(b.notices.Load())
	return nil
}

// bagString is the bag as STATUS shows it.
func (b *liveBot) bagString() string {
	var bag []string
	for _, item := range []int{potion, gourd} {
		if n := b.bag[item]; n > 0 {
			bag = append(bag, fmt.Sprintf("%d:%d", item, n))
		}
	}
	return strings.Join(bag, ",")
}

// play sends WORK and BUY, one at a time, drawn at random from a mix that
// spends more than it earns (coin runs out, and the fixed shop refuses),
// until stop is closed; after a notice, STATUS first. With repeats, the
// same command often comes twice in a row, and a notice must then tell the
// bot which of the two it names; without, a command never follows one with
// the same text.
func (b *liveBot) play(rng *rand.Rand, repeats bool, stop <-chan struct{}) error {
	mix := [...]string{"WORK", "WORK", "BUY 1001", "BUY 1001", "BUY 1002"}
	prev := ""
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		cmd := mix[rng.IntN(len(mix))]
		for !repeats && cmd == prev {
			cmd = mix[rng.IntN(len(mix))]
		}
		if b.status {
			cmd = "STATUS"
		}
		if err := b.step(cmd); err != nil {
			return err
		}
		prev = cmd
		b.done.Add(1)
	}
}

// liveTeam is live bots playing in the background.
type liveTeam struct {
	bots   []*liveBot
	stop   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
	failed chan error
}

// startLiveTeam starts the bots, each drawing its commands (with repeats
// or not: play) from its own generator seeded from seed.
func startLiveTeam(bots []*liveBot, seed uint64, repeats bool) *liveTeam {
	tm := &liveTeam{bots: bots, stop: make(chan struct{}), failed: make(chan error, len(bots))}
	for i, b := range bots {
		tm.wg.Add(1)
		go func() {
			defer tm.wg.Done()
			if err := b.play(rand.New(rand.NewPCG(seed, uint64(i))), repeats, tm.stop); err != nil {
				tm.failed <- err
			}
		}()
	}
	return tm
}

// halt stops the bots and returns the errors they met, one per bot at most.
func (tm *liveTeam) halt() []error {
	tm.once.Do(func() { close(tm.stop) })
	tm.wg.Wait()
	var errs []error
	for {
		select {
		case err := <-tm.failed:
			errs = append(errs, err)
		default:
			return errs
		}
	}
}

// fail is a bot's error, nil while none failed.
func (tm *liveTeam) fail() error {
	select {
	case err := <-tm.failed:
		tm.failed <- err // for halt
		return err
	default:
		return nil
	}
}

// waitResumed waits until every bot has received exactly kills notices and
// then had its model confirmed by a STATUS that worker pid answered. It
// returns how long that took; a message on failure.
func (tm *liveTeam) waitResumed(kills int64, pid int) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(waitBound)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < len(tm.bots); {
		b := tm.bots[i]
		n := b.notices.Load()
		if n > kills {
			return 0, fmt.Errorf("%s received %d restart notices after %d kills, want one each", b.id, n, kills)
		}
		if n == kills && b.checked.Load() == kills {
			if p := b.checkPID.Load(); p != int64(pid) {
				return 0, fmt.Errorf("%s: its STATUS after the notice was answered by pid %d, want the restarted worker %d", b.id, p, pid)
			}
			i++
			continue
		}
		if err := tm.fail(); err != nil {
			return 0, err
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s: within %v of the restart, %d notices (want %d) and its model checked by STATUS after %d of them",
				b.id, waitBound, n, kills, b.checked.Load())
		}
		<-tick.C
	}
	return time.Since(start), nil
}

// waitPast waits until every bot has settled n commands past marks.
func (tm *liveTeam) waitPast(marks []int64, n int64) error {
	deadline := time.Now().Add(waitBound)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < len(tm.bots); {
		if tm.bots[i].done.Load() >= marks[i]+n {
			i++
			continue
		}
		if err := tm.fail(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s settled %d commands in %v, want %d", tm.bots[i].id, tm.bots[i].done.Load()-marks[i], waitBound, n)
		}
		<-tick.C
	}
	return nil
}

func (tm *liveTeam) marks() []int64 {
	m := make([]int64, len(tm.bots))
	for i, b := range tm.bots {
		m[i] = b.done.Load()
	}
	return m
}
