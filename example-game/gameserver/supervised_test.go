package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// supervised is a supervisor running the game in handover mode.
type supervised struct {
	*proc
	worker   string // the worker binary the supervisor runs; replaced to upgrade
	snapshot string
}

func startSupervised(t *testing.T, bin string, workerArgs ...string) *supervised {
	t.Helper()
	return startSupervisedEnv(t, nil, bin, workerArgs...)
}

// startSupervisedEnv starts the supervisor with env added to its
// environment, which its workers inherit.
func startSupervisedEnv(t *testing.T, env []string, bin string, workerArgs ...string) *supervised {
	t.Helper()
	dir := t.TempDir()
	s := &supervised{worker: filepath.Join(dir, "gameserver"), snapshot: filepath.Join(dir, "snapshot")}
	s.install(t, bin)
	args := []string{"--mode", "handover", "--snapshot", s.snapshot, "--listen", "game=tcp://127.0.0.1:0",
		"--log-format", "json", "--restart-min", "10ms", "--", s.worker}
	s.proc = startProc(t, bins.supervisor, env, append(args, workerArgs...)...)
	e := s.waitJSON(t, "listening", func(e map[string]any) bool { return e["name"] == "game" })
	s.addr = e["addr"].(string)
	return s
}

// install puts bin at the worker's path by rename, as a deployment does.
func (s *supervised) install(t *testing.T, bin string) {
	t.Helper()
	src, err := os.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	tmp := s.worker + ".new"
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, s.worker); err != nil {
		t.Fatal(err)
	}
}

// waitJSON waits for the supervisor's log entry msg that satisfies ok.
func (s *supervised) waitJSON(t *testing.T, msg string, ok func(map[string]any) bool) map[string]any {
	t.Helper()
	var found map[string]any
	s.log.waitFunc(t, &s.at, fmt.Sprintf("%q", msg), func(line string) bool {
		var e map[string]any
		if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &e) != nil || e["message"] != msg {
			return false
		}
		if msg != "upgrade failed" && e["message"] == "upgrade failed" {
			return false
		}
		if ok == nil || ok(e) {
			found = e
			return true
		}
		return false
	})
	return found
}

// upgrade installs bin, sends SIGHUP and waits for generation gen to
// succeed; an "upgrade failed" fails the test with its reason.
func (s *supervised) upgrade(t *testing.T, bin string, gen int) map[string]any {
	t.Helper()
	s.install(t, bin)
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var e map[string]any
	s.log.waitFunc(t, &s.at, fmt.Sprintf("upgrade of gen %d", gen), func(line string) bool {
		var m map[string]any
		if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &m) != nil || m["gen"] != float64(gen) {
			return false
		}
		switch m["message"] {
		case "upgrade succeeded":
			e = m
			return true
		case "upgrade failed":
			t.Fatalf("upgrade to gen %d failed: %v", gen, m["reason"])
		}
		return false
	})
	return e
}

func pids(e map[string]any) []int {
	var out []int
	a, _ := e["pids"].([]any)
	for _, v := range a {
		out = append(out, int(v.(float64)))
	}
	return out
}

// shopBook records every successful purchase's remain, from every client:
// the stock is continuous when they are exactly 999999, 999998, ... with
// no gap (a purchase lost) and no repeat (one run twice, or an old stock
// restored).
type shopBook struct {
	mu      sync.Mutex
	remains map[int][]int64
}

func (b *shopBook) bought(item int, remain int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.remains[item] = append(b.remains[item], remain)
}

func (b *shopBook) check(t *testing.T, c *client) {
	t.Helper()
	for _, g := range goods {
		got := slices.Clone(b.remains[g.id])
		slices.Sort(got)
		for i, r := range got {
			if want := int64(1_000_000 - len(got) + i); r != want {
				t.Fatalf("item %d: remains %d...: %d where %d was due (a purchase lost or run twice)", g.id, got[:min(len(got), 5)], r, want)
			}
		}
		c.expect(t, fmt.Sprintf("STOCK %d", g.id), fmt.Sprintf("OK item=%d remain=%d", g.id, 1_000_000-len(got)))
	}
}

// bot is a player that keeps playing; its coin and bag follow from its own
// replies alone.
type bot struct {
	id   string
	c    *client
	coin int64
	bag  map[int]int64
	shop *shopBook
}

var buyReply = regexp.MustCompile(`^OK coin=(-?\d+) item=(\d+) count=(\d+) remain=(\d+)$`)

// apply checks one reply against what the bot knows and updates it.
func (b *bot) apply(cmd, reply string) error {
	if cmd == "WORK" {
		if want := fmt.Sprintf("OK coin=%d", b.coin+workPay); reply != want {
			return fmt.Errorf("%s: WORK: got %q, want %q", b.id, reply, want)
		}
		b.coin += workPay
		return nil
	}
	item, _ := strconv.Atoi(strings.TrimPrefix(cmd, "BUY "))
	g, _ := findGood(item)
	if reply == "ERR not enough coin" {
		if b.coin >= g.price {
			return fmt.Errorf("%s: %s refused with %d coins", b.id, cmd, b.coin)
		}
		return nil
	}
	want := fmt.Sprintf("OK coin=%d item=%d count=%d remain=", b.coin-g.price, item, b.bag[item]+1)
	m := buyReply.FindStringSubmatch(reply)
	if m == nil || !strings.HasPrefix(reply, want) {
		return fmt.Errorf("%s: %s: got %q, want %q...", b.id, cmd, reply, want)
	}
	b.coin -= g.price
	b.bag[item]++
	remain, _ := strconv.ParseInt(m[4], 10, 64)
	b.shop.bought(item, remain)
	return nil
}

// play sends batches of one to three commands, sometimes split mid-line
// across writes, until stop is closed, and counts each completed batch.
func (b *bot) play(seed uint64, stop <-chan struct{}, done func()) error {
	rng := rand.New(rand.NewPCG(seed, seed))
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		cmds := make([]string, 1+rng.IntN(3))
		for i := range cmds {
			cmds[i] = [...]string{"WORK", "WORK", "BUY 1001", "BUY 1001", "BUY 1002"}[rng.IntN(5)]
		}
		payload := strings.Join(cmds, "\n") + "\n"
		cut := len(payload)
		if rng.IntN(3) == 0 {
			cut = 1 + rng.IntN(len(payload)-1)
		}
		for _, part := range []string{payload[:cut], payload[cut:]} {
			if err := b.c.write(part); err != nil {
				return fmt.Errorf("%s: write: %v", b.id, err)
			}
		}
		for _, cmd := range cmds {
			reply, err := b.c.recv()
			if err != nil {
				return fmt.Errorf("%s: %s: connection lost: %v", b.id, cmd, err)
			}
			if err := b.apply(cmd, reply); err != nil {
				return err
			}
		}
		done()
	}
}

// progress counts each bot's completed batches, so that the test can wait
// until every bot has played on the new worker.
type progress struct {
	mu      sync.Mutex
	counts  []int
	changed chan struct{}
}

func (p *progress) add(i int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts[i]++
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *progress) mark() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.counts)
}

// waitPast waits until every bot has completed n batches since mark.
func (p *progress) waitPast(t *testing.T, mark []int, n int, failed <-chan error) {
	t.Helper()
	deadline := time.After(waitBound)
	for {
		p.mu.Lock()
		behind := -1
		for i, c := range p.counts {
			if c < mark[i]+n {
				behind = i
			}
		}
		changed := p.changed
		p.mu.Unlock()
		if behind < 0 {
			return
		}
		select {
		case <-changed:
		case err := <-failed:
			t.Fatal(err)
		case <-deadline:
			t.Fatalf("bot %d made no progress within %v", behind, waitBound)
		}
	}
}

// TestSupervisedUpgrades runs the game under the real supervisor in
// handover mode. Bots stay connected and keep playing (pipelined and
// split commands) across handovers that alternate the buggy and the fixed
// build: no connection closes, every reply is well formed, each bot's coin
// follows from its own replies, the stock is continuous, and a probe sees
// the new version and PID after each upgrade, and the new BUY rule run on
// the old state.
func TestSupervisedUpgrades(t *testing.T) {
	const nbots, upgrades = 8, 6
	s := startSupervised(t, bins.buggy, "--autosave", "20ms")
	s.waitJSON(t, "generation ready", nil)
	shop := &shopBook{remains: make(map[int][]int64)}
	probe := &bot{id: "probe", c: dial(t, s.addr), coin: startCoin, bag: map[int]int64{}, shop: shop}
	probe.c.expect(t, "LOGIN probe", "OK player=probe coin=100 version="+buggyVersion)
	bots := make([]*bot, nbots)
	for i := range bots {
		bots[i] = &bot{id: fmt.Sprintf("bot%d", i), c: dial(t, s.addr), coin: startCoin, bag: map[int]int64{}, shop: shop}
		bots[i].c.expect(t, "LOGIN "+bots[i].id, fmt.Sprintf("OK player=%s coin=100 version=%s", bots[i].id, buggyVersion))
	}
	prog := &progress{counts: make([]int, nbots), changed: make(chan struct{})}
	stop, failed := make(chan struct{}), make(chan error, nbots)
	var wg sync.WaitGroup
	for i, b := range bots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.play(uint64(i+1), stop, func() { prog.add(i) }); err != nil {
				failed <- err
			}
		}()
	}
	defer func() { // on a failure, too: the bots must not outlive the test
		close(stop)
		wg.Wait()
	}()
	prog.waitPast(t, prog.mark(), 3, failed)

	oldPID, lastVer := s.statusPID(t, probe, buggyVersion), buggyVersion
	for gen := 2; gen <= upgrades+1; gen++ {
		bin, ver, fixed := bins.buggy, buggyVersion, gen%2 == 0
		if fixed {
			bin, ver = bins.fixed, fixedVersion
		}
		mark, from := prog.mark(), s.at
		e := s.upgrade(t, bin, gen)
		if _, ok := e["blackout_ms"].(float64); !ok {
			t.Errorf("gen %d: upgrade succeeded without blackout_ms: %v", gen, e)
		}
		// The new worker logs its restore before it says READY=1.
		m := s.log.wait(t, &from, regexp.MustCompile(`gameserver\[(\d+)\]: handover: restored (\d+) players and (\d+) connections in (\S+)`))
		if m[2] != strconv.Itoa(nbots+1) || m[3] != strconv.Itoa(nbots+1) {
			t.Errorf("gen %d restored %s players and %s connections, want %d of each", gen, m[2], m[3], nbots+1)
		}
		pid := s.statusPID(t, probe, ver)
		if pid == oldPID || !slices.Contains(pids(e), pid) || m[1] != strconv.Itoa(pid) {
			t.Fatalf("gen %d: STATUS from pid %d (old %d), the supervisor says %v, the restore log %s", gen, pid, oldPID, pids(e), m[1])
		}
		oldPID, lastVer = pid, ver
		probe.checkShopRule(t, fixed)
		prog.waitPast(t, mark, 3, failed)
		t.Logf("gen %d (%s): blackout %.1f ms, restored in %s", gen, ver, e["blackout_ms"], m[4])
	}

	close(stop)
	wg.Wait()
	stop = make(chan struct{}) // for the deferred close
	select {
	case err := <-failed:
		t.Fatal(err)
	default:
	}
	for _, b := range append(bots, probe) {
		want := fmt.Sprintf("OK player=%s coin=%d bag=%s version=%s pid=%d", b.id, b.coin, bagString(b.bag), lastVer, oldPID)
		b.c.expect(t, "STATUS", want)
	}
	shop.check(t, probe.c)
	s.stop(t, syscall.SIGTERM)
}

// statusPID checks the probe's STATUS (coin, bag, version) and returns the
// PID that answered.
func (s *supervised) statusPID(t *testing.T, p *bot, ver string) int {
	t.Helper()
	reply := p.c.do(t, "STATUS")
	re := regexp.MustCompile(fmt.Sprintf(`^OK player=probe coin=%d bag=%s version=%s pid=(\d+)$`,
		p.coin, regexp.QuoteMeta(bagString(p.bag)), regexp.QuoteMeta(ver)))
	m := re.FindStringSubmatch(reply)
	if m == nil {
		t.Fatalf("STATUS: got %q, want %s", reply, re)
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}

// checkShopRule buys potions until the balance rule shows: the fixed build
// refuses a purchase the probe cannot afford; the buggy one lets it go
// below zero.
func (p *bot) checkShopRule(t *testing.T, fixed bool) {
	t.Helper()
	for range 2 + startCoin/10 {
		before := p.coin
		reply := p.c.do(t, "BUY 1001")
		if err := p.apply("BUY 1001", reply); err != nil {
			t.Fatal(err)
		}
		switch {
		case fixed && before < 10:
			if reply != "ERR not enough coin" {
				t.Fatalf("fixed build: BUY with %d coins: %q, want ERR not enough coin", before, reply)
			}
			return
		case !fixed && before < 10:
			if p.coin != before-10 {
				t.Fatalf("buggy build: BUY with %d coins: %q, want it to go through", before, reply)
			}
			return
		case reply == "ERR not enough coin":
			t.Fatalf("BUY with %d coins refused", before)
		}
	}
	t.Fatalf("coin never fell below a potion's price: %d", p.coin)
}

func bagString(bag map[int]int64) string {
	var s []string
	for _, item := range slices.Sorted(func(yield func(int) bool) {
		for k := range bag {
			if !yield(k) {
				return
			}
		}
	}) {
		if bag[item] > 0 {
			s = append(s, fmt.Sprintf("%d:%d", item, bag[item]))
		}
	}
	return strings.Join(s, ",")
}

// TestSupervisedKill9: a worker killed with SIGKILL is restarted by the
// supervisor, restores the last autosave and says how old it is.
func TestSupervisedKill9(t *testing.T) {
	s := startSupervised(t, bins.fixed, "--autosave", "20ms")
	pid := pids(s.waitJSON(t, "generation ready", nil))[0]
	c := dial(t, s.addr)
	c.expect(t, "LOGIN kim", "OK player=kim coin=100 version="+fixedVersion)
	for i := 1; i <= 3; i++ {
		c.expect(t, "WORK", fmt.Sprintf("OK coin=%d", 100+5*i))
	}
	c.expect(t, "BUY 1002", "OK coin=113 item=1002 count=1 remain=999999")
	// Five changes (the new player, three WORKs, one BUY): wait until
	// autosaves have covered them all.
	saved := regexp.MustCompile(fmt.Sprintf(`gameserver\[%d\]: autosave: saved \d+ players \((\d+) changes\)`, pid))
	for changes := 0; changes < 5; {
		n, _ := strconv.Atoi(s.log.wait(t, &s.at, saved)[1])
		changes += n
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if reply, err := c.recv(); err == nil {
		t.Fatalf("read %q from a killed worker", reply)
	}
	s.waitJSON(t, "worker restarting", nil)
	m := s.log.wait(t, &s.at, regexp.MustCompile(`gameserver\[(\d+)\]: restored autosave from (\S+) ago: 1 players, 0 connections resumed`))
	if m[1] == strconv.Itoa(pid) {
		t.Fatalf("restored by the killed worker %s?", m[1])
	}
	t.Logf("restarted worker %s restored an autosave from %s ago", m[1], m[2])
	c = dial(t, s.addr)
	c.expect(t, "LOGIN kim", "OK player=kim coin=113 version="+fixedVersion)
	c.expect(t, "STATUS", fmt.Sprintf("OK player=kim coin=113 bag=1002:1 version=%s pid=%s", fixedVersion, m[1]))
	c.expect(t, "STOCK 1002", "OK item=1002 remain=999999")
	s.stop(t, syscall.SIGTERM)
}

// TestSupervisedRollback: a new build that fails after the old worker has
// handed over is rolled back: the old build starts again, cold, on the same
// snapshot and the stored connections, and every player goes on where they
// were, a command split across the rollback included, after one NOTICE line.
func TestSupervisedRollback(t *testing.T) {
	s := startSupervisedEnv(t, []string{helperEnv + "=fail-after-go"}, bins.buggy, "--autosave", "0")
	s.waitJSON(t, "generation ready", nil)
	a, b, c := dial(t, s.addr), dial(t, s.addr), dial(t, s.addr)
	a.expect(t, "LOGIN ada", "OK player=ada coin=100 version="+buggyVersion)
	a.expect(t, "WORK", "OK coin=105")
	b.expect(t, "LOGIN ben", "OK player=ben coin=100 version="+buggyVersion)
	b.expect(t, "BUY 1001", "OK coin=90 item=1001 count=1 remain=999999")
	c.expect(t, "STATUS", "ERR not logged in: LOGIN <player-id> first")
	if err := a.write("WO"); err != nil {
		t.Fatal(err)
	}

	from := s.at
	s.install(t, os.Args[0])
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	e := s.waitJSON(t, "upgrade failed", func(e map[string]any) bool { return e["gen"] == float64(2) })
	t.Logf("upgrade failed: %v", e["reason"])
	ready := s.waitJSON(t, "generation ready", func(e map[string]any) bool { return e["gen"] == float64(3) })
	s.log.wait(t, &from, regexp.MustCompile(`gameserver\[\d+\]: restored handover snapshot from \S+ ago: 2 players, 3 connections resumed`))
	pid := pids(ready)[0]

	// A cold start: each session is told first.
	for _, cl := range []*client{a, b, c} {
		if got, err := cl.recv(); got != noticeRestarted || err != nil {
			t.Fatalf("first line after the rollback: %q, %v; want %q", got, err, noticeRestarted)
		}
	}
	if err := a.write("RK\n"); err != nil {
		t.Fatal(err)
	}
	if got, err := a.recv(); got != "OK coin=110" || err != nil {
		t.Fatalf("WORK split across the rollback: %q, %v", got, err)
	}
	a.expect(t, "STATUS", fmt.Sprintf("OK player=ada coin=110 bag= version=%s pid=%d", buggyVersion, pid))
	b.expect(t, "BUY 1001", "OK coin=80 item=1001 count=2 remain=999998")
	c.expect(t, "LOGIN cy", "OK player=cy coin=100 version="+buggyVersion)
	s.stop(t, syscall.SIGTERM)
}
