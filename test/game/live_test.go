package game

import (
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// killGap bounds the random delay between a restarted worker serving every
// bot and the next kill: the kill's instant among the bots' commands.
const killGap = 40 * time.Millisecond

// TestLiveKill9UnderLoad: the game run with --live keeps its data in a
// shared-memory region and its connections in the supervisor's live fd
// store, so a kill -9 of the worker, at a random instant under 1000 bots
// (200 under -race or -short) playing WORK and BUY without pause, costs
// them a pause, not a disconnect. 50 kills (10 under -race or -short), and
// after each one:
//   - the supervisor restarts the worker (crash restart), which serves
//     every bot on the connection it had: a bot never redials, and an EOF,
//     a reset or a reply it did not expect fails the test;
//   - every bot gets exactly one restart notice, before any reply of the
//     new worker, and then STATUS, answered by the new worker, matches its
//     own model of its coin and bag exactly; a notice that names the
//     command the bot is waiting for means that command was applied and its
//     reply is not coming, and the bot applies it to its model.
//
// At the end, with the bots halted: each bot's STATUS is 100 + earned -
// spent, and each good's remaining stock plus what the bots hold of it is
// the initial stock; no two purchases saw the same remain.
//
// Here a bot never sends the same command twice in a row:
// TestLiveKill9RepeatedCommand does.
func TestLiveKill9UnderLoad(t *testing.T) { testLiveKills(t, false) }

// TestLiveKill9RepeatedCommand is TestLiveKill9UnderLoad with bots that
// often send the same command twice in a row (WORK, WORK), as any client
// may. A notice names a command by its text alone, so it must never name
// one whose reply was written: a bot waiting for the second WORK would take
// a notice naming "WORK" as about that one. (It did, until the session's
// record noted the reply and where it begins in the output, so that the
// restarted worker writes what the socket did not take.)
func TestLiveKill9RepeatedCommand(t *testing.T) {
	testLiveKills(t, true)
}

// TestLiveKill9Standby is TestLiveKill9UnderLoad with the supervisor's
// --standby: a kill promotes the standby when one waits (it follows the
// region under the bots' writes), else restarts the worker.
func TestLiveKill9Standby(t *testing.T) { testLiveKills(t, false, "--standby") }

func testLiveKills(t *testing.T, repeats bool, flags ...string) {
	kills := 50
	if raceEnabled || testing.Short() {
		kills = 10
	}
	s, pid, bots, tm, seed := startLiveGame(t, repeats, flags...)
	rng := rand.New(rand.NewPCG(seed, math.MaxUint64))
	t.Logf("%d bots; %d kills at random instants (seed %d)", len(bots), kills, seed)
	var resumes []time.Duration
	for k := 1; k <= kills; k++ {
		time.Sleep(time.Duration(rng.Int64N(int64(killGap)))) // the instant, not a synchronisation
		killed, start := pid, time.Now()
		pid = s.killWorker(t, pid)
		if _, err := tm.waitResumed(int64(k), pid); err != nil {
			t.Fatalf("kill %d of %d (worker %d, restarted as %d): %v\nlast lines of the supervisor's log:\n%s",
				k, kills, killed, pid, err, s.Log.Tail(60))
		}
		resumes = append(resumes, time.Since(start))
	}
	if errs := tm.halt(); len(errs) > 0 {
		t.Fatalf("%d bots failed after the last kill; the first: %v", len(errs), errs[0])
	}
	checkLiveEnd(t, bots, pid, kills, kills)

	if slices.Contains(flags, "--standby") {
		promoted := 0
		for _, l := range s.Log.All() {
			if l.Msg() == "standby promoted: it takes the crashed worker's place" {
				promoted++
			}
		}
		t.Logf("%d of %d kills promoted a standby", promoted, kills)
		if promoted == 0 {
			t.Errorf("no kill promoted a standby")
		}
	}
	slices.Sort(resumes)
	var cmds, lost, stale int64
	for _, b := range bots {
		cmds += b.done.Load()
		lost, stale = lost+int64(b.lost), stale+int64(b.stale)
	}
	t.Logf("%d commands settled; %d notices named the command awaited (applied, reply lost), %d the one answered before it; kill to every bot's STATUS checked: median %v, max %v",
		cmds, lost, stale, resumes[len(resumes)/2].Round(time.Millisecond), resumes[len(resumes)-1].Round(time.Millisecond))
}

// startLiveGame starts the game with --live under the supervisor (flags
// added), and 1000 bots (200 under -race or -short) playing WORK and BUY
// without pause, each checking every reply against its own model (with
// repeats, often the same command twice in a row); it returns once every
// bot has settled 3 commands.
func startLiveGame(t *testing.T, repeats bool, flags ...string) (s *supervised, pid int, bots []*liveBot, tm *liveTeam, seed uint64) {
	nbots := 1000
	if raceEnabled || testing.Short() {
		nbots = 200
	}
	scripts := t.TempDir()
	for name, src := range map[string]string{"game.lua": "game.lua", "shop.lua": "shop_fixed.lua"} {
		if err := os.WriteFile(filepath.Join(scripts, name), shipped(t, src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s = startSupervised(t, supervisedOpts{
		bin: bins.fixed,
		// --restart-max: a worker killed before it ran that long is
		// restarted after a delay that doubles up to it (from 10ms).
		// "worker ready" is logged at debug level.
		flags:      append([]string{"--log-level", "debug", "--restart-max", "50ms", "--ready-timeout", "30s"}, flags...),
		workerArgs: []string{"--live", "--scripts", scripts, "--stock", fmt.Sprint(bigStock)},
	})
	_, pid = s.ready(t)

	bots = make([]*liveBot, nbots)
	for i := range bots {
		bots[i] = newLiveBot(t, s.addr, fmt.Sprintf("bot%04d", i))
	}
	seed = uint64(time.Now().UnixNano())
	tm = startLiveTeam(bots, seed, repeats)
	t.Cleanup(func() {
		if t.Failed() {
			for _, b := range bots {
				b.conn.Close() // unblock the bots waiting on a worker that hangs
			}
		}
		tm.halt()
	})
	if err := tm.waitPast(tm.marks(), 3); err != nil {
		t.Fatalf("before the first event: %v", err)
	}
	return s, pid, bots, tm, seed
}

// TestLiveHandoversUnderLoad: SIGHUP handovers of the --live game at
// random instants under the bots of TestLiveKill9UnderLoad, 10 (4 under
// -race or -short). The old worker freezes its sessions rather than
// stopping them one by one (server.freeze): a session idle at the freeze
// keeps waiting and never begins a command again, one in the middle of a
// command runs it and leaves a reply not yet written to the new worker,
// which takes the idle sessions over from their settled records (without
// asking the kernel where the connection stands) and writes those
// replies from theirs. After each handover every bot settles three more
// commands with the new worker; none is disconnected or gets a notice,
// and at the end each bot's coins and bag are its model's, and the stock
// adds up. Meanwhile other clients come and go without pause (LOGIN, QUIT,
// the end of the connection): a slot freed before GO is taken again by a
// new connection, stored under the same name, and a QUIT is caught by a
// freeze; each must still get its replies and its end.
func TestLiveHandoversUnderLoad(t *testing.T) {
	ups := 10
	if raceEnabled || testing.Short() {
		ups = 4
	}
	s, pid, bots, tm, seed := startLiveGame(t, false)
	_, churnErr := churn(s.addr, 4)
	defer func() {
		n, err := churnErr()
		if err != nil {
			t.Errorf("a client coming and going, after %d: %v", n, err)
		}
		t.Logf("%d clients came and went", n)
		if n == 0 {
			t.Errorf("no client came and went during the handovers")
		}
	}()
	rng := rand.New(rand.NewPCG(seed, math.MaxUint64))
	t.Logf("%d bots; %d handovers at random instants (seed %d)", len(bots), ups, seed)
	for k := 1; k <= ups; k++ {
		time.Sleep(time.Duration(rng.Int64N(int64(killGap)))) // the instant, not a synchronisation
		at := s.Log.Len()
		o := s.hup(t)
		if !o.ok {
			t.Fatalf("handover %d: %s\n%s", k, o.end.Str("reason"), s.Log.Tail(40))
		}
		old, newPID := pid, o.end.Ints("pids")[0]
		pid = newPID
		frozeAt := at
		m := s.waitRe(&at, liveResumedRe)
		resumed, _ := strconv.Atoi(m[3])
		asked, _ := strconv.Atoi(m[4])
		f := s.waitRe(&frozeAt, regexp.MustCompile(`gameserver\[`+strconv.Itoa(old)+`\]: handover: saved .*stopping the sessions, (\d+) of them in the middle of a command\)`))
		busy, _ := strconv.Atoi(f[1])
		if m[1] != strconv.Itoa(pid) || m[2] != "handover" || resumed < len(bots) || asked > busy {
			t.Fatalf("handover %d: the old worker froze with %d sessions in the middle of a command, the new worker %d says %q; want the %d bots' sessions (and the comers') resumed, all but those from their settled records",
				k, busy, pid, m[0], len(bots))
		}
		t.Logf("handover %d: %d sessions in the middle of a command at the freeze, %d of %d resumed asked the kernel", k, busy, asked, resumed)
		if err := tm.waitPast(tm.marks(), 3); err != nil {
			t.Fatalf("handover %d (worker %d to %d): %v\n%s", k, old, pid, err, s.Log.Tail(40))
		}
	}
	if errs := tm.halt(); len(errs) > 0 {
		t.Fatalf("%d bots failed after the last handover; the first: %v", len(errs), errs[0])
	}
	checkLiveEnd(t, bots, pid, 0, 0)
}

// churn runs n clients that each, until stopped, connect, log in as a new
// player, QUIT, and read to the end of the connection, each step bounded.
// The function it returns stops them and returns how many came and went,
// and the first failure.
func churn(addr string, n int) (stop chan struct{}, result func() (int64, error)) {
	stop = make(chan struct{})
	var done atomic.Int64
	errs := make(chan error, n)
	for k := range n {
		go func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				if err := comeAndGo(addr, fmt.Sprintf("churn%d-%d", k, i)); err != nil {
					errs <- err
					return
				}
				done.Add(1)
			}
		}()
	}
	return stop, func() (int64, error) {
		close(stop)
		var first error
		for range n {
			if err := <-errs; err != nil && first == nil {
				first = err
			}
		}
		return done.Load(), first
	}
}

// comeAndGo connects, logs in as player, QUITs, and reads to the end.
func comeAndGo(addr, player string) error {
	c, err := net.DialTimeout("tcp", addr, waitBound)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitBound))
	if _, err := fmt.Fprintf(c, "LOGIN %s\nQUIT\n", player); err != nil {
		return err
	}
	rest, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("%s: %w after %q", player, err, rest)
	}
	lines := strings.Split(strings.TrimSuffix(string(rest), "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "OK player="+player+" ") || lines[1] != "BYE" {
		return fmt.Errorf("%s: LOGIN and QUIT got %q, want OK and BYE, then the end", player, rest)
	}
	return nil
}

// liveResumedRe is a --live worker's line after it resumed the sessions:
// PID, handover or restart, sessions resumed, of them how many asked the
// kernel where their connection stands.
var liveResumedRe = regexp.MustCompile(`gameserver\[(\d+)\]: live (handover|restart): \d+ players and (\d+) sessions resumed .*; (\d+) asked the kernel where they stand`)

// killWorker kills worker pid with SIGKILL and waits until the supervisor
// has restarted it and the new worker is ready; it returns the new PID.
func (s *supervised) killWorker(t *testing.T, pid int) int {
	t.Helper()
	at := s.Log.Len()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 worker %d: %v", pid, err)
	}
	exited := s.waitMsg(&at, "worker exited", func(l line) bool { return l.Int("pid") == pid })
	if !strings.Contains(exited.Str("status"), "killed") {
		t.Fatalf("worker %d exited with status %q, want it killed", pid, exited.Str("status"))
	}
	return s.waitMsg(&at, "worker ready", func(l line) bool { return l.Int("pid") != pid }).Int("pid")
}

// checkLiveEnd checks, with the bots halted, that every bot received from
// minNotices to maxNotices restart notices, that its data is its model's,
// and that the stock and the bags add up to the initial stock.
func checkLiveEnd(t *testing.T, bots []*liveBot, pid, minNotices, maxNotices int) {
	t.Helper()
	held := map[int]int64{}
	remains := map[int][]int64{}
	for _, b := range bots {
		if n := b.notices.Load(); n < int64(minNotices) || n > int64(maxNotices) {
			t.Errorf("%s received %d restart notices, want %d to %d (one per kill of a worker that served it)", b.id, n, minNotices, maxNotices)
		}
		if b.coin != startCoin+b.earned-b.spent {
			t.Errorf("%s: model coin %d, want 100 + earned %d - spent %d", b.id, b.coin, b.earned, b.spent)
		}
		want := fmt.Sprintf("OK player=%s coin=%d bag=%s version=%s pid=%d", b.id, b.coin, b.bagString(), fixedVersion, pid)
		if got, err := b.exchange("STATUS"); err != nil || got != want {
			t.Errorf("%s, halted: STATUS: got %q (%v), want %q (100 + earned %d - spent %d)", b.id, got, err, want, b.earned, b.spent)
		}
		for _, item := range []int{potion, gourd} {
			held[item] += b.bag[item]
			remains[item] = append(remains[item], b.remains[item]...)
		}
	}
	for _, item := range []int{potion, gourd} {
		reply, err := bots[0].exchange(fmt.Sprintf("STOCK %d", item))
		m := stockRe.FindStringSubmatch(reply)
		if err != nil || m == nil {
			t.Fatalf("STOCK %d: got %q (%v)", item, reply, err)
		}
		var remain int64
		fmt.Sscan(m[2], &remain)
		if remain+held[item] != bigStock {
			t.Errorf("item %d: remain %d + %d in the bots' bags = %d, want the initial stock %d (%+d)",
				item, remain, held[item], remain+held[item], int64(bigStock), remain+held[item]-bigStock)
		}
		seen := remains[item]
		slices.Sort(seen)
		for i := 1; i < len(seen); i++ {
			if seen[i] == seen[i-1] {
				t.Errorf("item %d: two purchases answered remain=%d (one run twice?)", item, seen[i])
				break
			}
		}
		if len(seen) > 0 && (seen[0] < remain || seen[len(seen)-1] >= bigStock) {
			t.Errorf("item %d: purchases answered remains from %d to %d, want them within [%d, %d)", item, seen[0], seen[len(seen)-1], remain, int64(bigStock))
		}
	}
}
