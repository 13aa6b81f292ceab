package game

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/procswitch/supervisor/handoff"
	"github.com/procswitch/supervisor/handoff/handover"
)

// helperCrashOnData is a build that takes the handover, restores nothing,
// says READY=1 (so the upgrade succeeds), accepts new connections, and
// exits 1 as soon as any handed-over connection has data to read: the
// build that is ready and then crashes on its first real request. It only
// peeks at the data, so the command stays in the socket for whoever reads
// it next.
func helperCrashOnData() int {
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "helper[%d]: "+format+"\n", append([]any{os.Getpid()}, args...)...)
	}
	w, err := handoff.New()
	if err != nil {
		logf("%v", err)
		return 1
	}
	conns, err := handover.Await(context.Background(), w)
	if err != nil {
		logf("await handover: %v", err)
		return 1
	}
	ln, err := w.Listener("game")
	if err != nil {
		logf("listener: %v", err)
		return 1
	}
	data := make(chan string, len(conns))
	for _, c := range conns {
		go func() {
			if peek(c.Conn) {
				data <- c.Name
			}
		}()
	}
	var accepted []net.Conn // kept open until the crash
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted = append(accepted, c)
			logf("accepted %s", c.RemoteAddr())
		}
	}()
	if err := w.Ready(); err != nil {
		logf("ready: %v", err)
		return 1
	}
	logf("ready with %d connections, restored nothing", len(conns))
	name := <-data
	logf("connection %s sent data: crashing", name)
	return 1
}

// helperCrashOnCommand is helperCrashOnData that reads the command before
// it crashes: the command is gone from the socket, as a real request the
// bad build took would be.
func helperCrashOnCommand() int {
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "helper[%d]: "+format+"\n", append([]any{os.Getpid()}, args...)...)
	}
	w, err := handoff.New()
	if err != nil {
		logf("%v", err)
		return 1
	}
	conns, err := handover.Await(context.Background(), w)
	if err != nil {
		logf("await handover: %v", err)
		return 1
	}
	cmds := make(chan string, len(conns))
	for _, c := range conns {
		go func() {
			if line, err := bufio.NewReader(c.Conn).ReadString('\n'); err == nil {
				cmds <- c.Name + ": " + strings.TrimSpace(line)
			}
		}()
	}
	if err := w.Ready(); err != nil {
		logf("ready: %v", err)
		return 1
	}
	logf("ready with %d connections, restored nothing", len(conns))
	logf("read %s: crashing", <-cmds)
	return 1
}

// peek waits until c has a byte to read, and leaves it there; false on EOF
// or an error.
func peek(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var n int
	var rerr error
	buf := make([]byte, 1)
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr = syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK)
		return rerr != syscall.EAGAIN
	})
	return err == nil && rerr == nil && n > 0
}

// noticePrefix begins a line the game sends on its own, not a reply: after
// a cold start (a rollback), once to each session it resumed (doc.go).
const noticePrefix = "NOTICE "

// noticeRestarted is that notice.
const noticeRestarted = "NOTICE restarted: your last command may not have been applied; send STATUS to resync"

// noticeFilter passes a connection's replies and drops the game's notices,
// keeping them.
type noticeFilter struct {
	r       *bufio.Reader
	pending []byte
	err     error
	ns      *notices
}

func (f *noticeFilter) Read(p []byte) (int, error) {
	for len(f.pending) == 0 {
		if f.err != nil {
			return 0, f.err
		}
		line, err := f.r.ReadBytes('\n')
		f.err = err
		if err == nil && bytes.HasPrefix(line, []byte(noticePrefix)) {
			f.ns.mu.Lock()
			f.ns.seen = append(f.ns.seen, strings.TrimSpace(string(line)))
			f.ns.mu.Unlock()
			continue
		}
		f.pending = line
	}
	n := copy(p, f.pending)
	f.pending = f.pending[n:]
	return n, nil
}

// notices are the notice lines a set of clients were sent.
type notices struct {
	mu   sync.Mutex
	seen []string
}

// filter makes c skip the game's notices. c must have no reply pending.
func (ns *notices) filter(c *client) {
	c.r = bufio.NewReader(&noticeFilter{r: c.r, ns: ns})
}

// closedWithin says whether the server closed c within d: a read ends in
// EOF or a reset, rather than at the deadline.
func closedWithin(c *client, d time.Duration) error {
	c.conn.SetReadDeadline(time.Now().Add(d))
	b, err := c.r.ReadString('\n')
	switch {
	case err == nil:
		return fmt.Errorf("the connection answered %q", b)
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		return nil
	}
	return err
}

// acceptedRe is the crash-on-data helper's line for each connection it
// accepted.
var acceptedRe = regexp.MustCompile(`helper\[(\d+)\]: accepted (\S+)`)

// TestProbationRollbackHandover: a build that takes the handover, says
// READY=1 (the upgrade succeeds) and crashes on its bots' first commands is
// rolled back on probation by the supervisor: the previous build starts
// cold on the connections the supervisor kept and on the cutover snapshot.
// Every bot keeps its TCP connection and plays on, every reply exactly what
// its own history predicts (the bad build consumed no command, so none is
// lost and none runs twice), the shop's stock is continuous, a connection
// the bad build accepted after the cutover is closed, and the bad build is
// refused at the path.
func TestProbationRollbackHandover(t *testing.T) {
	const nbots = 40
	dir := t.TempDir()
	helperFile := filepath.Join(dir, "helper")
	writeFile(t, helperFile, []byte("crash-on-data"))
	s := startSupervised(t, supervisedOpts{
		bin:        bins.buggy,
		env:        []string{helperEnv + "=" + helperFile},
		flags:      []string{"--ready-timeout", "10s", "--drain-timeout", "30s", "--probation", "1m", "--log-level", "debug"},
		workerArgs: []string{"--autosave", "1s", "--stock", fmt.Sprint(bigStock)},
	})
	s.ready(t)
	ledger, _, probe, bots, tm := startPlaying(t, s.addr, nbots)
	var ns notices
	if err := tm.halt(); err != nil { // the bots' readers are idle: filter them
		t.Fatal(err)
	}
	for _, b := range append(bots, probe) {
		ns.filter(b.c)
	}
	tm = startTeam(bots)
	t.Cleanup(func() { tm.halt() })
	tm.waitPast(t, tm.marks(), 5)

	// The upgrade, with the bots idle: the coins each has at the cutover
	// are known, and a connection can be opened to the new build before
	// anything crashes it.
	if err := tm.halt(); err != nil {
		t.Fatal(err)
	}
	s.install(t, bins.helper)
	o := s.hup(t)
	if !o.ok {
		t.Fatalf("upgrade to a build that is ready failed: %s (%s)", o.end.Str("reason"), o.end.Str("kind"))
	}
	if got := o.end.Int("connections"); got != nbots+1 {
		t.Errorf("%d connections handed over, want %d", got, nbots+1)
	}
	badPID := o.end.Ints("pids")[0]
	at := o.started
	p := s.waitMsg(&at, "probation: a crash or a hang rolls back to the previous binary until it ends", func(l line) bool { return l.Int("gen") == o.gen })
	if p.Int("kept_connections") != nbots+1 || !p.Bool("cutover_snapshot") {
		t.Errorf("on probation: %s; want %d kept connections and the cutover snapshot", p.Raw, nbots+1)
	}
	if _, err := os.Stat(s.snapshot + ".cutover"); err != nil {
		t.Errorf("no cutover snapshot on probation: %v", err)
	}
	late := dial(t, s.addr)
	at = o.started
	for {
		m := s.waitRe(&at, acceptedRe)
		if m[1] == strconv.Itoa(badPID) && m[2] == late.conn.LocalAddr().String() {
			break
		}
	}

	// The bots' first commands crash it.
	tm = startTeam(bots)
	t.Cleanup(func() { tm.halt() })
	at = o.started
	exited := s.waitMsg(&at, "worker exited", func(l line) bool { return l.Int("pid") == badPID })
	failed := s.waitMsg(&at, "probation failed: rolling back to the previous binary", func(l line) bool { return l.Int("gen") == o.gen })
	rb := s.waitMsg(&at, "rolling back to the previous binary", nil)
	if rb.Int("stored_fds") != nbots+1 || rb.Int("old_gen") != o.gen {
		t.Errorf("rolling back: %s; want the %d kept connections, from generation %d", rb.Raw, nbots+1, o.gen)
	}
	gen, newPID := s.ready(t)
	m := s.waitRe(&at, coldRestoreRe)
	if m[1] != strconv.Itoa(newPID) || m[2] != "handover snapshot" || m[5] != strconv.Itoa(nbots+1) {
		t.Errorf("rollback gen %d (pid %d) restored: %q; want the handover (cutover) snapshot with %d connections resumed", gen, newPID, m[0], nbots+1)
	}
	served := s.waitMsg(&at, "rolled back on probation: the previous binary serves", nil)
	if served.Int("gen") != gen || served.Int("bad_gen") != o.gen || served.Str("result") != "lost" || served.Str("lost") == "" {
		t.Errorf("rolled back: %s; want gen %d from bad gen %d, result lost and what was lost", served.Raw, gen, o.gen)
	}
	t.Logf("bad worker %d: %s; %s; rolled back to %s in gen %d, pid %d: lost %q",
		badPID, exited.Str("status"), failed.Str("reason"), buggyVersion, gen, newPID, served.Str("lost"))
	if _, err := os.Stat(s.snapshot + ".cutover"); !errors.Is(err, os.ErrNotExist) {
		// rename(2) of a hard link onto another link of the same inode does
		// nothing and succeeds: when the bad worker wrote no snapshot, the
		// link the rollback "renamed" into place is still there.
		t.Errorf("%s.cutover is still there after the rollback (stat: %v): nothing removes it until the next upgrade", s.snapshot, err)
	}

	// The probe, idle since before the cutover, has what it had then.
	probe.c.expect(t, "STATUS", probe.status(buggyVersion, newPID))

	// The connection the bad build accepted is closed; the bots play on, on
	// their own connections.
	if err := closedWithin(late, waitBound); err != nil {
		t.Errorf("the connection opened after the cutover: %v; want it closed", err)
	}
	tm.waitPast(t, tm.marks(), 5)

	// The bad build is still at the path: SIGHUP is refused, with the fix.
	mark := s.Log.Len()
	s.signal(syscall.SIGHUP)
	at = mark
	refusal := s.waitMsg(&at, "upgrade failed", nil)
	if refusal.Str("kind") != "refused" || !strings.Contains(refusal.Str("reason"), "install a fixed build first") {
		t.Errorf("SIGHUP with the bad build at the path: %s; want it refused with the fix", refusal.Raw)
	}
	tm.waitPast(t, tm.marks(), 3)

	if err := tm.halt(); err != nil {
		t.Fatal(err)
	}
	// Exactly what each bot's own replies say: nothing lost since the
	// cutover, nothing run twice, nobody reset to the starting coins.
	for _, b := range append(bots, probe) {
		b.c.expect(t, "STATUS", b.status(buggyVersion, newPID))
	}
	ledger.check(t, probe.c)
	fresh := dial(t, s.addr)
	fresh.expect(t, "LOGIN newcomer", fmt.Sprintf("OK player=newcomer coin=%d version=%s", startCoin, buggyVersion))
	// Each resumed session was told, once, that its last command may not
	// have been applied; every bot and the probe have read past it by now.
	ns.mu.Lock()
	defer ns.mu.Unlock()
	t.Logf("%d notice lines to %d resumed sessions", len(ns.seen), nbots+1)
	if len(ns.seen) != nbots+1 {
		t.Errorf("%d notice lines, want one per resumed session (%d)", len(ns.seen), nbots+1)
	}
	for _, l := range ns.seen {
		if l != noticeRestarted {
			t.Errorf("notice %q, want %q", l, noticeRestarted)
			break
		}
	}
}

// ctlRun runs `supervisor ctl --control control args...` for at most
// waitBound and returns its exit status, stdout and stderr.
func ctlRun(t *testing.T, control string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.supervisor, append([]string{"ctl", "--control", control}, args...)...)
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("supervisor ctl %v did not exit within %v", args, waitBound)
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout.String(), stderr.String()
	default:
		t.Fatalf("supervisor ctl %v: %v", args, err)
	}
	return -1, "", ""
}

// TestHandoverOldWorkerHangs: an old worker that hangs (SIGSTOP) when told
// to save is killed at the drain timeout; the new build serves from the
// last complete snapshot, but the upgrade is reported as lost, never as a
// success: kind state-lost, result lost, `ctl upgrade --wait` exits 1, and
// the reason names what was lost (the snapshot that was restored instead,
// the connections that were dropped).
func TestHandoverOldWorkerHangs(t *testing.T) {
	const nbots = 5
	control := filepath.Join(t.TempDir(), "control")
	s := startSupervised(t, supervisedOpts{
		bin:        bins.buggy,
		flags:      []string{"--ready-timeout", "30s", "--drain-timeout", "2s", "--control", control},
		workerArgs: []string{"--autosave", "100ms", "--stock", fmt.Sprint(bigStock)},
	})
	_, pid := s.ready(t)
	_, _, probe, bots, tm := startPlaying(t, s.addr, nbots)
	if err := tm.halt(); err != nil {
		t.Fatal(err)
	}
	// The autosaves log how many changes each saved: wait until they have
	// saved every change the players made, the snapshot the new build gets.
	changes := 0
	for _, b := range append(bots, probe) {
		changes += b.changes
	}
	saved := regexp.MustCompile(fmt.Sprintf(`gameserver\[%d\]: autosave: saved (\d+) players \((\d+) changes\)`, pid))
	for at, n := 0, 0; n < changes; {
		m := s.waitRe(&at, saved)
		c, _ := strconv.Atoi(m[2])
		if n += c; n > changes {
			t.Fatalf("autosaves saved %d changes, the players made %d", n, changes)
		}
	}

	// Hung before it is told to save: stopped now, it is when the new
	// worker is initialised and the supervisor sends the drain signal.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	s.install(t, bins.fixed)
	mark := s.Log.Len()
	code, stdout, stderr := ctlRun(t, control, "upgrade", "--wait")
	t.Logf("ctl upgrade --wait: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	if code != 1 || !strings.Contains(stderr, "(state-lost)") ||
		!strings.Contains(stderr, "did not save within the drain timeout (2s) and was killed") ||
		!strings.Contains(stderr, "snapshot") || !strings.Contains(stderr, "connections were dropped") {
		t.Errorf("ctl upgrade --wait: exit %d, stderr %q; want exit 1, kind state-lost and a reason naming the snapshot restored and the connections dropped", code, stderr)
	}
	at := mark
	s.waitMsg(&at, "handover: old worker died while saving; using the last complete snapshot", func(l line) bool { return l.Int("pid") == pid })
	end := s.waitMsg(&at, "upgrade finished, but players lost state", nil)
	if end.Str("kind") != "state-lost" || end.Str("result") != "lost" || end.Str("lost") == "" {
		t.Errorf("outcome: %s; want kind state-lost, result lost and what was lost", end.Raw)
	}
	for _, l := range s.Log.All()[mark:] {
		if l.Msg() == "upgrade succeeded" {
			t.Errorf("an upgrade that lost state logged success: %s", l.Raw)
		}
	}
	newPID := end.Ints("pids")[0]
	t.Logf("lost: %s", end.Str("lost"))

	// Its players' connections were dropped; they come back to the state of
	// the last autosave.
	for _, b := range append(bots, probe) {
		if err := closedWithin(b.c, waitBound); err != nil {
			t.Errorf("%s: the hung worker's connection: %v; want it closed", b.id, err)
		}
	}
	for _, b := range append(bots, probe) {
		c := dial(t, s.addr)
		c.expect(t, "LOGIN "+b.id, fmt.Sprintf("OK player=%s coin=%d version=%s", b.id, b.coin, fixedVersion))
		c.expect(t, "STATUS", b.status(fixedVersion, newPID))
	}
}

// TestProbationRollbackLosesCommand: the bad build read a bot's command and
// crashed before it answered. The rollback restores the cutover snapshot, so
// that command is lost: the bot never gets its reply; it gets the game's
// notice instead, on its own connection, and STATUS then shows exactly the
// coins it had at the cutover (not the starting coins, not the command's
// effect). The other bots, idle, lose nothing.
func TestProbationRollbackLosesCommand(t *testing.T) {
	const nbots = 10
	dir := t.TempDir()
	helperFile := filepath.Join(dir, "helper")
	writeFile(t, helperFile, []byte("crash-on-command"))
	s := startSupervised(t, supervisedOpts{
		bin:        bins.buggy,
		env:        []string{helperEnv + "=" + helperFile},
		flags:      []string{"--ready-timeout", "10s", "--drain-timeout", "30s", "--probation", "1m"},
		workerArgs: []string{"--autosave", "1s", "--stock", fmt.Sprint(bigStock)},
	})
	s.ready(t)
	ledger, _, probe, bots, tm := startPlaying(t, s.addr, nbots)
	if err := tm.halt(); err != nil {
		t.Fatal(err)
	}
	s.install(t, bins.helper)
	o := s.hup(t)
	if !o.ok {
		t.Fatalf("upgrade to a build that is ready failed: %s (%s)", o.end.Str("reason"), o.end.Str("kind"))
	}
	at := o.started
	s.waitMsg(&at, "probation: a crash or a hang rolls back to the previous binary until it ends", func(l line) bool { return l.Int("gen") == o.gen })

	// One bot sends WORK: the bad build reads it and crashes.
	victim := bots[0]
	victim.c.conn.SetDeadline(time.Now().Add(waitBound))
	if _, err := victim.c.conn.Write([]byte("WORK\n")); err != nil {
		t.Fatal(err)
	}
	s.waitRe(&at, regexp.MustCompile(`helper\[\d+\]: read c\d+: WORK: crashing`))
	s.waitMsg(&at, "probation failed: rolling back to the previous binary", func(l line) bool { return l.Int("gen") == o.gen })
	_, newPID := s.ready(t)
	s.waitMsg(&at, "rolled back on probation: the previous binary serves", nil)

	// Its next line is the notice, not a reply to WORK; then STATUS says
	// the coins of the cutover.
	notice, err := victim.c.r.ReadString('\n')
	if err != nil || strings.TrimSuffix(notice, "\n") != noticeRestarted {
		t.Fatalf("%s after its WORK was lost: %q, %v; want the notice %q", victim.id, notice, err, noticeRestarted)
	}
	victim.c.expect(t, "STATUS", victim.status(buggyVersion, newPID))
	t.Logf("%s: WORK lost; %q; STATUS: %d coins, as at the cutover", victim.id, strings.TrimSpace(notice), victim.coin)

	var ns notices
	for _, b := range append(bots[1:], probe) {
		ns.filter(b.c)
		b.c.expect(t, "STATUS", b.status(buggyVersion, newPID))
	}
	if len(ns.seen) != nbots {
		t.Errorf("%d notices to the %d other sessions, want one each", len(ns.seen), nbots)
	}
	tm = startTeam(bots)
	t.Cleanup(func() { tm.halt() })
	tm.waitPast(t, tm.marks(), 5)
	if err := tm.halt(); err != nil {
		t.Fatal(err)
	}
	ledger.check(t, probe.c)
}
