package game

import (
	"bufio"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// handoverSpan bounds the random instant of a kill after a SIGHUP: about
// the time a --live handover under the bots takes on a loaded 2-CPU
// machine, so that the instants fall before, during and after the old
// worker's freeze.
const handoverSpan = 150 * time.Millisecond

// TestLiveKill9OldWorkerInHandover: a kill -9 of the old worker in the
// middle of a --live handover, under the bots of TestLiveKill9UnderLoad,
// 9 times (6 under -race or -short), the kill's instant in turn: a random
// one after the SIGHUP (the new worker starting and preparing its
// sessions), as soon as the supervisor tells the old worker to save (its
// freeze under way), and as soon as the old worker says it saved (after
// its freeze, before its exit). Each upgrade succeeds, and nothing is
// lost: the new worker takes the region and the live fd store over (the
// old generation's worker restarted after a kill that came before the new
// one was initialised serves until the handover, or is stopped if it is
// still starting: it has nothing to save; a death before HANDOVER=saved
// makes the supervisor say CRASHED before GO, so that the new worker
// resumes on a crash restart's terms). No bot is disconnected: each
// settles three more commands after the kill, each gets at most one
// restart notice per kill, and at the end each bot's coins and bag are
// its model's and the stock adds up.
func TestLiveKill9OldWorkerInHandover(t *testing.T) {
	ups := 9
	if raceEnabled || testing.Short() {
		ups = 6
	}
	s, pid, bots, tm, seed := startLiveGame(t, false)
	rng := rand.New(rand.NewPCG(seed, math.MaxUint64))
	t.Logf("%d bots; %d handovers, the old worker killed in each (seed %d)", len(bots), ups, seed)
	for k := 1; k <= ups; k++ {
		time.Sleep(time.Duration(rng.Int64N(int64(killGap)))) // the instant, not a synchronisation
		at := s.Log.Len()
		s.signal(syscall.SIGHUP)
		gen := s.waitMsg(&at, "upgrade started", nil).Int("gen")
		old := pid
		var when string
		switch k % 3 {
		case 1:
			d := time.Duration(rng.Int64N(int64(handoverSpan)))
			time.Sleep(d) // the instant, not a synchronisation
			when = "at " + d.Round(time.Millisecond).String() + " after the SIGHUP"
		case 2:
			s.waitMsg(&at, "handover: new worker initialised, old one saving", nil)
			when = "as it was told to save (its freeze under way)"
		case 0:
			saved := at // the outcome may come first
			s.waitRe(&saved, regexp.MustCompile(`gameserver\[`+strconv.Itoa(old)+`\]: handover: saved`))
			when = "at its saved line (after its freeze, before its exit)"
		}
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatalf("handover %d: kill -9 of the old worker %d: %v", k, old, err)
		}
		end := s.waitFor(&at, "the outcome of the upgrade to gen "+strconv.Itoa(gen), func(l line) bool {
			return (l.Msg() == "upgrade succeeded" || l.Msg() == "upgrade failed" || l.Msg() == "upgrade finished, but players lost state") && l.Int("gen") == gen
		})
		if end.Msg() != "upgrade succeeded" {
			t.Errorf("handover %d, old worker %d killed %s: %s", k, old, when, end.Raw)
		}
		if err := tm.waitPast(tm.marks(), 3); err != nil {
			t.Fatalf("handover %d, old worker %d killed %s (%s): %v\n%s", k, old, when, end.Raw, err, s.Log.Tail(60))
		}
		pid = servingPID(t, s.addr, k)
		if pids := end.Ints("pids"); end.Msg() == "upgrade succeeded" && (len(pids) != 1 || pids[0] != pid) {
			t.Errorf("handover %d: upgrade to %v, but worker %d answers", k, pids, pid)
		}
		var notices int64
		for _, b := range bots {
			notices += b.notices.Load()
		}
		t.Logf("handover %d: old worker %d killed %s; worker %d serves; %d restart notices so far", k, old, when, pid, notices)
	}
	if errs := tm.halt(); len(errs) > 0 {
		t.Fatalf("%d bots failed after the last handover; the first: %v", len(errs), errs[0])
	}
	checkLiveEnd(t, bots, pid, 0, ups)
}

// servingPID is the PID in a STATUS reply to a new client, player probeK.
func servingPID(t *testing.T, addr string, k int) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitBound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitBound))
	r := bufio.NewReader(c)
	if _, err := fmt.Fprintf(c, "LOGIN probe%d\nSTATUS\n", k); err != nil {
		t.Fatal(err)
	}
	r.ReadString('\n') // LOGIN's reply
	reply, err := r.ReadString('\n')
	m := regexp.MustCompile(` pid=(\d+)$`).FindStringSubmatch(strings.TrimSuffix(reply, "\n"))
	if err != nil || m == nil {
		t.Fatalf("a new client's STATUS: got %q (%v), want a reply with the pid", reply, err)
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}
