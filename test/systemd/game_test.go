package systemd_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/procswitch/supervisor/test/procwatch"
)

const (
	gameUnit = "gameserver.service"
	gameAddr = "127.0.0.1:7000"
)

// gameStatus is loadclient's reply to "status" in game mode.
type gameStatus struct {
	Reply   string `json:"reply"`
	Coin    int    `json:"coin"`
	Version string `json:"version"`
	PID     int    `json:"pid"`
	Works   int    `json:"works"`
}

// gameResult is loadclient's result in game mode.
type gameResult struct {
	LoginCoin int      `json:"login_coin"`
	Works     int      `json:"works"`
	LastCoin  int      `json:"last_coin"`
	Statuses  []string `json:"statuses"`
	Error     string   `json:"error"`
}

// TestGameHandover: the game unit starts (the game with --live); systemctl
// reload hands a playing client's session (its connection and its coins)
// to the new build; SIGUSR2 re-executes the supervisor in place, MainPID
// and the session unchanged; after a stop, the snapshot in the
// StateDirectory brings the player back.
func TestGameHandover(t *testing.T) {
	c := need(t)
	startUnit(t, c, gameUnit)
	player := fmt.Sprintf("p%d", time.Now().UnixNano()%1_000_000_000)
	g := c.start(t, "game client", prefix+"/loadclient", "game", "-addr", gameAddr, "-player", player, "-max", "5m")
	g.event(t, "serving", time.Minute, nil)
	time.Sleep(200 * time.Millisecond) // some WORK on the old build
	var before, after gameStatus
	g.send(t, "status")
	g.event(t, "status", 30*time.Second, &before)
	if before.Version != "v1" {
		t.Fatalf("STATUS before the reload: %s, want version v1", before.Reply)
	}

	builds.installT(t, "gameserver", gameV2)
	t0 := time.Now()
	if r := c.systemctl(reloadBound, "reload", gameUnit); r.err != nil || r.code != 0 {
		t.Fatalf("reload: %v\n%s", r, c.diag(gameUnit))
	}
	t.Logf("systemctl reload (handover): %v", time.Since(t0).Round(time.Millisecond))
	time.Sleep(200 * time.Millisecond) // some WORK on the new build
	g.send(t, "status")
	g.event(t, "status", 30*time.Second, &after)
	t.Logf("STATUS before: %s\nSTATUS after:  %s", before.Reply, after.Reply)
	if after.Version != "v2" || after.PID == before.PID {
		t.Errorf("STATUS after the reload: %s, want version v2 from a new worker (was pid %d)", after.Reply, before.PID)
	}

	// SIGUSR2: the supervisor re-executes itself in place (--self-upgrade
	// exec): the unit stays active, MainPID does not change, and the player
	// plays on with the same worker.
	mainPID := c.show(t, gameUnit, "MainPID")
	if r := c.systemctl(30*time.Second, "kill", "-s", "USR2", "--kill-who=main", gameUnit); r.err != nil || r.code != 0 {
		t.Fatalf("SIGUSR2: %v\n%s", r, c.diag(gameUnit))
	}
	if re := c.awaitJournal(t, gameUnit, 1, 30*time.Second, func(e procwatch.Entry) bool {
		return e.Is("re-exec in place: the new image serves, its workers adopted")
	}); len(re) != 1 {
		t.Fatalf("no re-exec in the journal\n%s", c.diag(gameUnit))
	} else {
		t.Logf("journal: %s", re[0].Raw)
	}
	if now, state := c.show(t, gameUnit, "MainPID"), c.show(t, gameUnit, "ActiveState"); now != mainPID || state != "active" {
		t.Errorf("after SIGUSR2: MainPID %s (was %s), %s; want the same PID, active", now, mainPID, state)
	}
	var reexeced gameStatus
	g.send(t, "status")
	g.event(t, "status", 30*time.Second, &reexeced)
	if reexeced.PID != after.PID || reexeced.Version != "v2" || reexeced.Works <= after.Works {
		t.Errorf("STATUS after SIGUSR2: %s, want the same worker %d playing on", reexeced.Reply, after.PID)
	}
	var res gameResult
	g.finish(t, &res)
	if res.Error != "" {
		t.Fatalf("the session broke: %s", res.Error)
	}
	if want := res.LoginCoin + 5*res.Works; res.LastCoin != want || after.Coin != res.LoginCoin+5*after.Works {
		t.Errorf("coin %d after %d WORKs from %d, want %d: the session's data did not survive the handover",
			res.LastCoin, res.Works, res.LoginCoin, want)
	}
	ups := c.awaitJournal(t, gameUnit, 1, 10*time.Second, func(e procwatch.Entry) bool {
		return e.Is("upgrade succeeded", "blackout_ms")
	})
	if len(ups) != 1 {
		t.Errorf("no \"upgrade succeeded\" line with blackout_ms in the journal\n%s", c.diag(gameUnit))
	} else {
		t.Logf("journal: %s", ups[0].Raw)
	}

	// Stop: the game saves its snapshot in the StateDirectory, which the next
	// start restores.
	inv := c.show(t, gameUnit, "InvocationID")
	if r := c.systemctl(stopBound, "stop", gameUnit); r.err != nil || r.code != 0 {
		t.Fatalf("stop: %v\n%s", r, c.diag(gameUnit))
	}
	c.stoppedCleanly(t, gameUnit, inv)
	c.must(t, 30*time.Second, "test", "-s", "/var/lib/gameserver/snapshot")
	if r := c.systemctl(startBound, "start", gameUnit); r.err != nil || r.code != 0 {
		t.Fatalf("start again: %v\n%s", r, c.diag(gameUnit))
	}
	g2 := c.start(t, "game client", prefix+"/loadclient", "game", "-addr", gameAddr, "-player", player, "-max", "1m")
	var back struct {
		Reply string `json:"reply"`
	}
	g2.event(t, "serving", time.Minute, &back)
	var res2 gameResult
	g2.finish(t, &res2)
	if res2.LoginCoin != res.LastCoin {
		t.Errorf("after a stop and a start, LOGIN says %q: want coin=%d, as saved", back.Reply, res.LastCoin)
	}
}
