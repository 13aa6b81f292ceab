package container_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/test/loadgen"
	"github.com/procswitch/supervisor/test/procwatch"
)

// The load: clients that never retry, some on a new connection per
// request, some on kept-alive connections, all on one query.
const (
	query       = "/path?from=100,200&to=300,400"
	loadClients = 4                // per mode
	loadBatch   = 200              // requests awaited between steps, per mode
	loadBound   = 60 * time.Second // for a batch
	stopMargin  = 10 * time.Second // the supervisor's own exit, after the drain
)

// TestUpgradeUnderLoad: with the supervisor as PID 1 and clients that never
// retry, a new build copied into the volume and SIGHUP sent to PID 1 from
// the host (as `kill -HUP` on the node) give a new generation, which serves
// the new build; `supervisor ctl upgrade --wait` inside the container (as
// `kubectl exec`) gives another; SIGUSR2 to PID 1 re-executes the
// supervisor in place, its workers adopted; no request fails; no zombie is
// left.
func TestUpgradeUnderLoad(t *testing.T) {
	im := needImage(t)
	c := startContainer(t, im)
	addr, err := c.WaitListening("http", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.checkProbes(t, http.StatusOK)
	load := startLoad(t, "http://"+addr)
	load.await(t, loadBatch)

	// A new build, copied into the volume as a deployment does; then
	// SIGHUP to PID 1.
	rel, ok := strings.CutPrefix(im.worker(), c.fs.mount+"/")
	if !ok {
		t.Fatalf("the worker %s is not in the volume %s", im.worker(), c.fs.mount)
	}
	if err := copyFile(filepath.Join(c.fs.volume, rel), im.pathfindV2); err != nil {
		t.Fatal(err)
	}
	mark := c.Log.Len()
	c.signal(t, syscall.SIGHUP)
	u := c.upgraded(t, mark, 2)
	t.Logf("SIGHUP: generation %d ready in %.1f ms, pids %v", u.Gen, u.ReadyMS, u.PIDs)
	drained := time.Now()
	load.await(t, loadBatch)

	// As `kubectl exec POD -- /supervisor ctl upgrade --wait`.
	mark = c.Log.Len()
	out, err := c.exec(t, im.file.entrypoint[0], "ctl", "upgrade", "--wait")
	if err != nil {
		t.Fatalf("%s ctl upgrade --wait in the container: %v\n%s", im.file.entrypoint[0], err, out)
	}
	t.Logf("ctl upgrade --wait: %s", strings.TrimSpace(out))
	u = c.upgraded(t, mark, 3)
	load.await(t, loadBatch)

	// SIGUSR2 to PID 1: the supervisor re-executes itself in place (a fork
	// and exit would end the container): same PID 1, same workers.
	mark = c.Log.Len()
	c.signal(t, syscall.SIGUSR2)
	re, _, err := c.Find(mark, upgradeBound, "the re-exec", func(e procwatch.Entry) bool {
		return e.Is("re-exec in place: the new image serves, its workers adopted") ||
			e.Is("re-exec in place refused: this image serves on") || e.Is("re-exec in place failed; this image serves on")
	})
	if err != nil {
		t.Fatal(err)
	}
	if !re.Is("re-exec in place: the new image serves, its workers adopted") || fmt.Sprint(re.Ints("pids")) != fmt.Sprint(u.PIDs) {
		t.Fatalf("SIGUSR2 to PID 1: %s; want the re-exec, workers %v adopted", re.Raw, u.PIDs)
	}
	if c.Exited() {
		t.Fatalf("the container ended at the SIGUSR2: %v", c.Err())
	}
	t.Logf("SIGUSR2: re-executed in place in %v ms", re.Int("took_ms"))
	load.await(t, loadBatch)

	results := load.stop()
	for _, res := range results {
		if res.Failed() != 0 || len(res.Records) == 0 {
			t.Errorf("load: %d requests, %d failed, by class %v; first failures: %v", len(res.Records), res.Failed(), res.ByClass(), res.Errors(5))
		}
		versions := map[string]int{}
		for _, rec := range res.Records {
			if rec.Class == loadgen.OK && rec.Start.After(drained) {
				versions[rec.Version]++
			}
		}
		if len(versions) != 1 || versions[newVersion] == 0 {
			t.Errorf("versions that answered once the first generation had drained: %v, want only %s", versions, newVersion)
		}
		t.Logf("load: %d requests, %d failed; by worker pid %v", len(res.Records), res.Failed(), res.ByPID())
	}
	if zs := zombies(c.pid1); len(zs) > 0 {
		t.Errorf("zombies in the container: %s", procs(zs))
	}
	var workers []int
	for _, pid := range procwatch.ChildPIDs(c.pid1) {
		workers = append(workers, nsPID(pid))
	}
	if fmt.Sprint(workers) != fmt.Sprint(u.PIDs) {
		t.Errorf("PID 1's children (PIDs in the container): %v, want the last generation's workers %v", workers, u.PIDs)
	}
	c.checkProbes(t, http.StatusOK)

	c.signal(t, syscall.SIGTERM)
	if err := c.waitExit(t, im.flagDuration(t, "--stop-delay")+drainTimeout(t, im)+stopMargin); err != nil {
		t.Errorf("the container's exit: %v\n%s", err, c.Log.Tail(20))
	}
}

// TestStopDrains: SIGTERM to PID 1 fails /readyz at once; for --stop-delay
// the workers go on serving (the load sees no failure); requests under way
// when the signal came and requests on connections open when the drain
// began are answered; the container exits 0 within the bound that the
// Deployment's terminationGracePeriodSeconds must exceed.
func TestStopDrains(t *testing.T) {
	im := needImage(t)
	c := startContainer(t, im)
	addr, err := c.WaitListening("http", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	delay := im.flagDuration(t, "--stop-delay")
	bound := delay + drainTimeout(t, im) + stopMargin
	c.checkProbes(t, http.StatusOK)

	load := startLoad(t, "http://"+addr)
	// Kept-alive connections, each with a request answered and the next
	// one half sent: a request under way when SIGTERM comes. (Its head
	// must be whole within pathfind's ReadHeaderTimeout, 5s.)
	conns := make([]*keptConn, 4)
	for i := range conns {
		conns[i] = dialKept(t, addr, time.Now().Add(bound+startBound))
		conns[i].request(t, true)
	}
	load.await(t, loadBatch)
	for _, kc := range conns {
		kc.half(t)
	}

	mark := c.Log.Len()
	sent := time.Now()
	c.signal(t, syscall.SIGTERM)
	stop, _, err := c.Find(mark, startBound, "the stop's start", func(e procwatch.Entry) bool {
		return strings.HasPrefix(e.Msg(), "stop requested")
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, kc := range conns {
		if code, closed := kc.finish(t); code != http.StatusOK {
			t.Errorf("connection %d: the request under way at SIGTERM got %d, want 200", i, code)
		} else if closed {
			conns[i] = nil
		}
	}
	// /readyz fails from the signal on, /healthz does not; the load is
	// served throughout --stop-delay.
	c.checkProbes(t, http.StatusServiceUnavailable)
	checkLoad(t, load.stop())
	if _, _, err := c.Find(mark, 0, "", isDrain); err == nil {
		t.Errorf("the drain began before the load had stopped, within --stop-delay %v of the signal: too early, or the machine too slow for this test", delay)
	}

	drain, _, err := c.Find(mark, delay+startBound, "the drain's start", isDrain)
	if err != nil {
		t.Fatal(err)
	}
	if waited := drain.Time().Sub(stop.Time()); waited < delay-10*time.Millisecond {
		t.Errorf("the drain began %v after the stop was asked for, want --stop-delay %v", waited, delay)
	}
	// Requests on the connections still open when the drain began: a
	// draining worker answers them, and closes the connection.
	for i, kc := range conns {
		if kc == nil {
			continue
		}
		code, closed := kc.request(t, false)
		if code != http.StatusOK {
			t.Errorf("connection %d: a request sent once the drain had begun got %d, want 200", i, code)
		}
		t.Logf("connection %d: a request sent once the drain had begun: %d, connection close %v", i, code, closed)
		kc.Close()
	}
	err = c.waitExit(t, bound)
	took := time.Since(sent)
	if err != nil {
		t.Errorf("the container's exit: %v\n%s", err, c.Log.Tail(20))
	}
	if _, _, err := c.Find(mark, time.Second, "stopped", func(e procwatch.Entry) bool { return e.Is("stopped") }); err != nil {
		t.Error(err)
	}
	t.Logf("SIGTERM to the container's exit: %v (bound %v: --stop-delay %v + --drain-timeout + %v)", took.Round(time.Millisecond), bound, delay, stopMargin)
}

func isDrain(e procwatch.Entry) bool { return e.Is("stopping: draining every generation") }

// drainTimeout is the image's --drain-timeout, or the supervisor's default.
func drainTimeout(t *testing.T, im *image) time.Duration {
	if d := im.flagDuration(t, "--drain-timeout"); d > 0 {
		return d
	}
	return 30 * time.Second
}

// upgraded waits for the upgrade started from log index mark on to succeed
// as generation gen, and for the generation before to drain.
func (c *container) upgraded(t *testing.T, mark, gen int) procwatch.Upgrade {
	t.Helper()
	u, err := c.WaitUpgrade(mark, upgradeBound)
	if err != nil {
		t.Fatal(err)
	}
	if !u.OK || u.Gen != gen {
		t.Fatalf("upgrade to generation %d: %+v, want a success\n%s", gen, u, c.Log.Tail(20))
	}
	if _, err := c.WaitDrained(u.End, u.OldGen, upgradeBound); err != nil {
		t.Fatal(err)
	}
	return u
}

// checkProbes checks that /healthz answers 200, /readyz answers ready
// and /metrics answers 200, on the address the supervisor logged.
func (c *container) checkProbes(t *testing.T, ready int) {
	t.Helper()
	e, _, err := c.Find(0, time.Second, "the probes' address", func(e procwatch.Entry) bool {
		return strings.HasPrefix(e.Msg(), "serving /metrics") && e.Str("addr") != ""
	})
	if err != nil {
		t.Fatal(err)
	}
	addr := e.Str("addr")
	for path, want := range map[string]int{"/healthz": http.StatusOK, "/readyz": ready, "/metrics": http.StatusOK} {
		rec, err := loadgen.Get("http://"+addr+path, 5*time.Second)
		if err != nil || rec.Status != want {
			t.Errorf("GET %s: status %d (%v, %v), want %d", path, rec.Status, rec.Class, rec.Err, want)
		}
	}
}

// load is a load run per client mode.
type load []*loadgen.Run

func startLoad(t *testing.T, url string) load {
	t.Helper()
	var l load
	for _, mode := range []loadgen.Mode{loadgen.NewConn, loadgen.KeepAlive} {
		r, err := loadgen.Start(context.Background(), loadgen.Config{URL: url + query, Mode: mode, Clients: loadClients})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Stop() })
		l = append(l, r)
	}
	return l
}

// await waits for n more requests of each run.
func (l load) await(t *testing.T, n int) {
	t.Helper()
	for _, r := range l {
		if want := r.Len() + n; !r.Await(want, loadBound) {
			t.Fatalf("load: %d requests, not %d, within %v", r.Len(), want, loadBound)
		}
	}
}

func (l load) stop() []*loadgen.Result {
	var res []*loadgen.Result
	for _, r := range l {
		res = append(res, r.Stop())
	}
	return res
}

func checkLoad(t *testing.T, results []*loadgen.Result) {
	t.Helper()
	for _, res := range results {
		if res.Failed() != 0 || len(res.Records) == 0 {
			t.Errorf("load: %d requests, %d failed, by class %v; first failures: %v", len(res.Records), res.Failed(), res.ByClass(), res.Errors(5))
		}
	}
}

// keptConn is a kept-alive connection driven by hand, one request at a
// time, so that a request can be left half sent.
type keptConn struct {
	net.Conn
	br   *bufio.Reader
	host string
}

func dialKept(t *testing.T, addr string, deadline time.Time) *keptConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(deadline); err != nil {
		t.Fatal(err)
	}
	return &keptConn{Conn: conn, br: bufio.NewReader(conn), host: addr}
}

// head is a request without the blank line that ends it.
func (k *keptConn) head() string {
	return "GET " + query + " HTTP/1.1\r\nHost: " + k.host + "\r\nUser-Agent: container-test\r\n"
}

// request sends a whole request and returns the status, and whether the
// server closes the connection after it; with mustOK it fails the test on
// anything but 200 kept alive.
func (k *keptConn) request(t *testing.T, mustOK bool) (int, bool) {
	t.Helper()
	if _, err := io.WriteString(k, k.head()+"\r\n"); err != nil {
		t.Fatal(err)
	}
	code, closed := k.response(t)
	if mustOK && (code != http.StatusOK || closed) {
		t.Fatalf("status %d, connection close %v: want 200 kept alive", code, closed)
	}
	return code, closed
}

// half sends all of a request but its final blank line: the worker has
// accepted the connection and is reading the request.
func (k *keptConn) half(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(k, k.head()); err != nil {
		t.Fatal(err)
	}
}

// finish ends the half-sent request and returns the status, and whether
// the server closes the connection after it.
func (k *keptConn) finish(t *testing.T) (int, bool) {
	t.Helper()
	if _, err := io.WriteString(k, "\r\n"); err != nil {
		t.Errorf("finishing a request under way: %v", err)
		return 0, true
	}
	return k.response(t)
}

func (k *keptConn) response(t *testing.T) (code int, closed bool) {
	t.Helper()
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		t.Errorf("reading a response: %v", err)
		return 0, true
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Errorf("reading a response's body: %v", err)
		return 0, true
	}
	return resp.StatusCode, resp.Close
}
