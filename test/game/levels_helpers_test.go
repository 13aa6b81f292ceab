package game

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// patchedPay is what WORK pays in the patched game.lua (workPay before).
const patchedPay = 7

// levels is a game under the supervisor with its rules in a --scripts
// directory and a control socket, a probe and bots that buy in the
// background. The bots only BUY: the shop in the directory is the buggy
// one, which sells on credit, so their replies follow from their history
// whatever WORK pays; the probe alone checks WORK's pay, with its own
// expectation.
type levels struct {
	*supervised
	scripts string // the --scripts directory
	control string
	pid     int // the worker's
	ledger  *ledger
	probe   *bot
	bots    []*bot
	tm      *team
}

func startLevels(t *testing.T, nbots int) *levels {
	t.Helper()
	lv := &levels{scripts: t.TempDir(), control: filepath.Join(t.TempDir(), "control")}
	lv.put(t, "game.lua", shipped(t, "game.lua"))
	lv.put(t, "shop.lua", shipped(t, "shop.lua"))
	lv.supervised = startSupervised(t, supervisedOpts{
		bin:        bins.buggy,
		flags:      []string{"--control", lv.control, "--ready-timeout", "30s", "--drain-timeout", "30s"},
		workerArgs: []string{"--scripts", lv.scripts, "--stock", fmt.Sprint(bigStock)},
	})
	_, lv.pid = lv.ready(t)
	e := &era{}
	// The shop rule is the directory's buggy one, whichever build runs.
	e.set(build{known: true, version: buggyVersion})
	lv.ledger = newLedger(bigStock)
	lv.probe = newBot(t, lv.addr, "probe", lv.ledger, e, buggyVersion)
	lv.bots = make([]*bot, nbots)
	for i := range lv.bots {
		lv.bots[i] = newBot(t, lv.addr, fmt.Sprintf("bot%03d", i), lv.ledger, e, buggyVersion)
	}
	lv.tm = startBuyers(lv.bots)
	t.Cleanup(func() { lv.tm.halt() })
	lv.tm.waitPast(t, lv.tm.marks(), 5)
	return lv
}

// shipped is the content of one of the game's shipped scripts.
func shipped(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "example-game", "gameserver", "scripts", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// put writes a script into the directory as a deployment does: a new
// file renamed over the old one.
func (lv *levels) put(t *testing.T, name string, content []byte) {
	t.Helper()
	tmp := filepath.Join(lv.scripts, "."+name)
	if err := os.WriteFile(tmp, content, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(lv.scripts, name)); err != nil {
		t.Fatal(err)
	}
}

// gameWithPay is the shipped game.lua with WORK paying pay.
func gameWithPay(t *testing.T, pay int) []byte {
	t.Helper()
	old := fmt.Sprintf("M.pay = %d ", workPay)
	src := string(shipped(t, "game.lua"))
	if !strings.Contains(src, old) {
		t.Fatalf("game.lua does not define the pay as %q", old)
	}
	return []byte(strings.Replace(src, old, fmt.Sprintf("M.pay = %d ", pay), 1))
}

// reload runs `ctl reload --wait` and returns its exit status and output.
func (lv *levels) reload(t *testing.T) (int, string) {
	t.Helper()
	code, stdout, stderr := ctlRun(t, lv.control, "reload", "--wait")
	return code, stdout + stderr
}

// reloaded waits for the worker's log line of a successful reload.
func (lv *levels) reloaded(t *testing.T) {
	t.Helper()
	lv.waitRe(&lv.at, regexp.MustCompile(`gameserver\[`+strconv.Itoa(lv.pid)+`\]: reload: scripts \S+ → \S+ \(`))
}

// work has the probe WORK once and checks that it pays pay.
func (b *bot) work(t *testing.T, pay int64) {
	t.Helper()
	b.c.expect(t, "WORK", fmt.Sprintf("OK coin=%d", b.coin+pay))
	b.coin += pay
}

// startBuyers has the bots BUY, one command at a time each, until the team
// halts.
func startBuyers(bots []*bot) *team {
	tm := &team{bots: bots, stop: make(chan struct{}), failed: make(chan error, len(bots))}
	mix := [...]string{"BUY 1002", "BUY 1001", "BUY 1002"}
	for i, b := range bots {
		tm.wg.Add(1)
		go func() {
			defer tm.wg.Done()
			for j := i; ; j++ {
				select {
				case <-tm.stop:
					return
				default:
				}
				if err := b.step(mix[j%len(mix)]); err != nil {
					tm.failed <- err
					return
				}
			}
		}()
	}
	return tm
}

// finish stops the bots and checks that none lost its connection or met a
// reply it did not expect, that each one's STATUS is what its history
// says, and that the stock is continuous.
func (lv *levels) finish(t *testing.T, version string) {
	t.Helper()
	if err := lv.tm.halt(); err != nil {
		t.Fatal(err)
	}
	for _, b := range append(lv.bots, lv.probe) {
		b.c.expect(t, "STATUS", b.status(version, lv.pid))
	}
	lv.ledger.check(t, lv.probe.c)
	lv.signal(15)
	if code := lv.wait(); code != 0 {
		t.Errorf("supervisor exited with %d after SIGTERM", code)
	}
}
