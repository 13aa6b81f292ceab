package systemd_test

import (
	"testing"
	"time"

	"github.com/procswitch/supervisor/test/procwatch"
)

const (
	activatedSocket  = "pathfind-activated.socket"
	activatedService = "pathfind-activated.service"
	activatedURL     = "http://127.0.0.1:8081"
)

// TestSocketActivated: systemd owns the listening socket. The first
// connection starts the service; the supervisor takes systemd's socket over
// (it binds nothing itself) and serves; reloads under load lose nothing; and
// since systemd keeps the socket, even a stop and the re-activation by the
// next connection lose nothing.
func TestSocketActivated(t *testing.T) {
	c := need(t)
	t.Cleanup(func() { stopUnit(t, c, activatedSocket) })
	t.Cleanup(func() { stopUnit(t, c, activatedService) })
	if r := c.systemctl(startBound, "start", activatedSocket); r.err != nil || r.code != 0 {
		t.Fatalf("%v\n%s", r, c.diag(activatedSocket))
	}
	if st := c.show(t, activatedService, "ActiveState"); st != "inactive" {
		t.Fatalf("%s is %q before any connection, want inactive", activatedService, st)
	}
	load, s := c.startLoad(t, activatedURL) // its first request starts the service
	if st := c.show(t, activatedService, "ActiveState"); st != "active" {
		t.Fatalf("%s is %q while serving, want active\n%s", activatedService, st, c.diag(activatedService))
	}
	t.Logf("activated by the first connection: worker %d", s.PID)
	listening := c.awaitJournal(t, activatedService, 1, 10*time.Second, func(e procwatch.Entry) bool {
		return e.Is("listening", "inherited")
	})
	switch {
	case len(listening) != 1:
		t.Errorf("want one \"listening\" line in the journal, got %d\n%s", len(listening), c.diag(activatedService))
	case listening[0].Fields["inherited"] != true || listening[0].Str("name") != "http":
		t.Errorf("the supervisor did not take systemd's socket \"http\" over: %s", listening[0].Raw)
	default:
		t.Logf("journal: %s", listening[0].Raw)
	}

	for i := 1; i <= 3; i++ {
		b := pathfindV2
		if i%2 == 0 {
			b = pathfindV1
		}
		builds.installT(t, "pathfind", b)
		if r := c.systemctl(reloadBound, "reload", activatedService); r.err != nil || r.code != 0 {
			t.Fatalf("reload %d: %v\n%s", i, r, c.diag(activatedService))
		}
	}
	first := c.show(t, activatedService, "InvocationID")
	if r := c.systemctl(stopBound, "stop", activatedService); r.err != nil || r.code != 0 {
		t.Fatalf("stop: %v\n%s", r, c.diag(activatedService))
	}
	if st := c.show(t, activatedSocket, "ActiveState"); st != "active" {
		t.Errorf("%s is %q after the service stopped, want active (listening)", activatedSocket, st)
	}
	// The load's next connection starts the service again.
	if !waitFor(time.Minute, func() bool {
		inv := c.show(t, activatedService, "InvocationID")
		return inv != first && c.show(t, activatedService, "ActiveState") == "active"
	}) {
		t.Fatalf("the service was not activated again by the load\n%s", c.diag(activatedService))
	}
	time.Sleep(300 * time.Millisecond) // some requests served by the new invocation
	res := finishLoad(t, load)
	if res.Failed != 0 || res.Requests == 0 {
		t.Errorf("load over 3 reloads, a stop and a re-activation: %v", res)
	}
	if res.Versions["v1"] == 0 || res.Versions["v2"] == 0 {
		t.Errorf("answers by version %v: want both builds to have served", res.Versions)
	}
}
