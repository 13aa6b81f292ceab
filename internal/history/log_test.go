package history

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// appendEnv makes the test binary a second writer instead: it appends
// $HISTORY_TEST_N records to the history in $HISTORY_TEST_APPEND, as writer
// $HISTORY_TEST_WRITER (see appendSeq), and exits.
const appendEnv = "HISTORY_TEST_APPEND"

func TestMain(m *testing.M) {
	if dir := os.Getenv(appendEnv); dir != "" {
		n, _ := strconv.Atoi(os.Getenv("HISTORY_TEST_N"))
		max, _ := strconv.ParseInt(os.Getenv("HISTORY_TEST_MAX"), 10, 64)
		l, err := Open(dir, Options{MaxSize: max, Keep: 1000})
		if err == nil {
			os.Stdin.Read(make([]byte, 1)) // the parent's go
			err = appendSeq(l, os.Getenv("HISTORY_TEST_WRITER"), n)
		}
		if err == nil {
			err = l.Close()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// rec is the i-th test record of writer name: Gen is i, Binary the name.
func rec(name string, i int) Record {
	return Record{Time: time.Date(2026, 12, 1, 10, 0, 0, i*int(time.Millisecond), time.UTC), Event: EventUpgrade,
		Trigger: TriggerCtl, Gen: i, FromGen: i - 1, Binary: name, Result: ResultOK, ReadyMS: 8.5}
}

// appendSeq appends records 1 to n of writer name, reading the last one
// back after every other one: the writers' and readers' turns at the lock
// mix.
func appendSeq(l *Log, name string, n int) error {
	for i := 1; i <= n; i++ {
		if err := l.Append(rec(name, i)); err != nil {
			return err
		}
		if i%2 == 0 {
			if _, _, err := l.Last(1); err != nil {
				return err
			}
		}
	}
	return nil
}

func open(t *testing.T, dir string, opts Options) *Log {
	t.Helper()
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func last(t *testing.T, l *Log, n int) []Record {
	t.Helper()
	recs, skipped, err := l.Last(n)
	if err != nil || skipped != 0 {
		t.Fatalf("Last(%d): %d records, %d skipped, %v", n, len(recs), skipped, err)
	}
	return recs
}

// gens lists the records' generations, and drops as "dN".
func gens(recs []Record) string {
	var s []string
	for _, r := range recs {
		if r.Event == EventDropped {
			s = append(s, "d"+strings.Fields(r.Lost)[0])
		} else {
			s = append(s, strconv.Itoa(r.Gen))
		}
	}
	return strings.Join(s, " ")
}

// logBuffer collects what a Log says; its writer logs from its goroutine.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestAppendLast(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "sub")
	l := open(t, dir, Options{})
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("directory: %v, %v; want it made, mode 0700", fi.Mode(), err)
	}
	if recs := last(t, l, 5); len(recs) != 0 {
		t.Errorf("an empty history: %+v", recs)
	}
	for i := 1; i <= 30; i++ {
		if err := l.Append(rec("a", i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := gens(last(t, l, 3)); got != "28 29 30" {
		t.Errorf("Last(3): %s", got)
	}
	all := last(t, l, 0)
	if len(all) != 30 || all[0].Gen != 1 || all[29].Gen != 30 {
		t.Errorf("Last(0): %s", gens(all))
	}
	if r := all[0]; r.PID != os.Getpid() || r.Binary != "a" || r.ReadyMS != 8.5 || r.Time.Nanosecond() != int(time.Millisecond) {
		t.Errorf("a record read back: %+v", r)
	}
	if got := gens(last(t, l, 100)); got != gens(all) {
		t.Errorf("Last(100) of 30: %s", got)
	}

	// Time and PID are filled in; a record that does not encode is refused.
	before := time.Now()
	if err := l.Append(Record{Event: EventCrash, Trigger: TriggerCrash, Result: ResultOK}); err != nil {
		t.Fatal(err)
	}
	if r := last(t, l, 1)[0]; r.Time.Before(before) || r.PID != os.Getpid() {
		t.Errorf("Time and PID not filled in: %+v", r)
	}
	if err := l.Append(Record{Event: EventUpgrade, ReadyMS: nan()}); err == nil {
		t.Error("Append of a NaN: no error")
	}

	b, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil || bytes.Count(b, []byte("\n")) != 31 {
		t.Errorf("the file: %d lines, %v", bytes.Count(b, []byte("\n")), err)
	}
	if fi, err := os.Stat(filepath.Join(dir, FileName)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the file's mode: %v, %v; want 0600", fi.Mode(), err)
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(rec("a", 99)); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: %v, want ErrClosed", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close twice: %v", err)
	}
	if recs, _, err := l.Last(1); err != nil || len(recs) != 1 || recs[0].Event != EventCrash {
		t.Errorf("Last after Close: %+v, %v", recs, err)
	}
}

func nan() float64 {
	zero := 0.0
	return zero / zero
}

// TestRotation: the history file never passes MaxSize, Keep rotated files
// are kept and no more, and what is kept is the newest records, in order.
func TestRotation(t *testing.T) {
	dir := t.TempDir()
	const max = 2048
	l := open(t, dir, Options{MaxSize: max, Keep: 2})
	for i := 1; i <= 200; i++ {
		l.Append(rec("a", i))
		if i%7 == 0 {
			last(t, l, 1) // smaller batches too
		}
	}
	recs := last(t, l, 0)
	checkFiles(t, dir, max, 2)
	if len(recs) < 2*max/300 || recs[len(recs)-1].Gen != 200 {
		t.Fatalf("after rotations, %d records kept: %s", len(recs), gens(recs))
	}
	for i, r := range recs {
		if want := 200 - len(recs) + 1 + i; r.Gen != want {
			t.Fatalf("record %d is generation %d, want %d: %s", i, r.Gen, want, gens(recs))
		}
	}
	t.Logf("%d records kept in 3 files of at most %d bytes", len(recs), max)
}

// checkFiles checks that dir holds the history, at most keep rotated files
// and the lock, each history file at most max bytes of whole records.
func checkFiles(t *testing.T, dir string, max int64, keep int) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{lockName: true, FileName: true}
	for i := 1; i <= keep; i++ {
		allowed[FileName+"."+strconv.Itoa(i)] = true
	}
	for _, e := range ents {
		if !allowed[e.Name()] {
			t.Errorf("file %s in the directory", e.Name())
			continue
		}
		if e.Name() == lockName {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(b)) > max {
			t.Errorf("%s: %d bytes, more than %d", e.Name(), len(b), max)
		}
		if len(b) > 0 && b[len(b)-1] != '\n' {
			t.Errorf("%s does not end with a newline", e.Name())
		}
		for _, line := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
			if _, ok := parseRecord(line); !ok {
				t.Errorf("%s: a line that is no record: %q", e.Name(), line)
			}
		}
	}
}

// TestDurableOrder watches the file system calls: every write is fsynced
// before the next one and before a flush returns; a creation and a
// rotation are fsynced in the directory before anything is written to the
// new file.
func TestDurableOrder(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	var ops []string
	note := func(op string) {
		mu.Lock()
		ops = append(ops, op)
		mu.Unlock()
	}
	sys := osFuncs{
		write: func(f *os.File, b []byte) (int, error) {
			note("write " + filepath.Base(f.Name()))
			return f.Write(b)
		},
		sync: func(f *os.File) error {
			note("sync " + filepath.Base(f.Name()))
			return f.Sync()
		},
		rename: func(from, to string) error {
			err := os.Rename(from, to)
			if err == nil {
				note("rename " + filepath.Base(from) + " " + filepath.Base(to))
			}
			return err
		},
		syncDir: func(d string) error {
			note("syncdir " + d)
			return syncDir(d)
		},
	}
	l := open(t, dir, Options{MaxSize: 1024, Keep: 2, sys: &sys})
	for i := 1; i <= 40; i++ {
		l.Append(rec("a", i))
		if i%3 == 0 {
			last(t, l, 1)
			mu.Lock()
			if n := len(ops); n == 0 || !strings.HasPrefix(ops[n-1], "sync ") {
				t.Errorf("a flush returned before the fsync: %q", ops)
			}
			mu.Unlock()
		}
	}
	l.Close()
	mu.Lock()
	defer mu.Unlock()
	unsynced, dirty := false, true // the file is new: a directory fsync is due
	renames := 0
	for i, op := range ops {
		switch {
		case strings.HasPrefix(op, "write "):
			if unsynced || dirty {
				t.Fatalf("op %d, %s, before the fsync of the %s: %q", i, op, map[bool]string{true: "directory", false: "last write"}[dirty], ops[:i+1])
			}
			unsynced = true
		case strings.HasPrefix(op, "sync "):
			unsynced = false
		case strings.HasPrefix(op, "rename "):
			dirty = true
			renames++
		case op == "syncdir "+dir:
			dirty = false
		}
	}
	if unsynced || renames == 0 {
		t.Errorf("%d renames; the last write fsynced: %v: %q", renames, !unsynced, ops)
	}
	if want := "rename " + FileName + " " + FileName + ".1"; !contains(ops, want) {
		t.Errorf("no %q: %q", want, ops)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestAppendNeverWaits: with the disk stuck in an fsync, Append still
// returns at once; what does not fit in the queue is dropped, and the
// history says how many, where they were.
func TestAppendNeverWaits(t *testing.T) {
	dir := t.TempDir()
	stuck := make(chan struct{})
	entered := make(chan struct{}, 1)
	sys := realOS
	sys.sync = func(f *os.File) error {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-stuck
		return f.Sync()
	}
	logs := &logBuffer{}
	const queue = 16
	l := open(t, dir, Options{Queue: queue, Log: zerolog.New(logs), sys: &sys})
	l.Append(rec("a", 1))
	<-entered // the writer is stuck on generation 1's fsync
	began := time.Now()
	for i := 2; i <= 100; i++ {
		if err := l.Append(rec("a", i)); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(began); d > time.Second {
		t.Errorf("99 Appends took %v with the disk stuck", d)
	}
	close(stuck)
	want := "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 d83"
	if got := gens(last(t, l, 0)); got != want {
		t.Errorf("history:\n%s\nwant\n%s", got, want)
	}
	l.Append(rec("a", 101))
	if got := gens(last(t, l, 3)); got != "17 d83 101" {
		t.Errorf("the last 3 records: %s", got)
	}
	r := last(t, l, 2)[0]
	if r.Event != EventDropped || r.Result != ResultLost || r.Lost != "83 history records" || !strings.Contains(r.Reason, "queue of 16 records was full") {
		t.Errorf("the record of the drop: %+v", r)
	}
	if n := strings.Count(logs.String(), "records are dropped"); n != 1 {
		t.Errorf("the drop logged %d times, want once:\n%s", n, logs)
	}

	// Drops not followed by another Append are written at Close.
	sys.sync = (*os.File).Sync
	l2 := open(t, t.TempDir(), Options{Queue: 1, sys: &sys})
	for i := 1; i <= 50; i++ {
		l2.Append(rec("b", i))
	}
	l2.Close()
	recs := last(t, l2, 0)
	total := 0
	for _, r := range recs {
		if r.Event == EventDropped {
			n, _ := strconv.Atoi(strings.Fields(r.Lost)[0])
			total += n
		} else {
			total++
		}
	}
	if total != 50 {
		t.Errorf("50 Appends to a queue of 1: %d written or counted: %s", total, gens(recs))
	}
}

// TestWriteFails: a write that fails is said once in the log, its records
// are counted, and the next Append writes again, with a record of the loss
// first.
func TestWriteFails(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	failing := false
	sys := realOS
	sys.write = func(f *os.File, b []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		if failing {
			return 0, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
		}
		return f.Write(b)
	}
	set := func(v bool) {
		mu.Lock()
		failing = v
		mu.Unlock()
	}
	logs := &logBuffer{}
	l := open(t, dir, Options{Log: zerolog.New(logs), sys: &sys})
	l.Append(rec("a", 1))
	last(t, l, 1)
	set(true)
	l.Append(rec("a", 2))
	last(t, l, 1)
	l.Append(rec("a", 3))
	l.Append(rec("a", 4))
	last(t, l, 1)
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "no space left on device") || !strings.Contains(lines[0], `"level":"error"`) {
		t.Errorf("log while writes fail: %q, want one error line saying why", lines)
	}
	set(false)
	l.Append(rec("a", 5))
	recs := last(t, l, 0)
	if got := gens(recs); got != "1 d3 5" {
		t.Errorf("history: %s, want 1 d3 5", got)
	}
	if r := recs[1]; !strings.Contains(r.Reason, "writing them failed") || !strings.Contains(r.Reason, "no space left on device") {
		t.Errorf("the record of the loss: %+v", r)
	}
	if !strings.Contains(logs.String(), "writing again") {
		t.Errorf("no line saying it writes again: %s", logs)
	}

	// Lost at the end: Close says so.
	set(true)
	l.Append(rec("a", 6))
	if err := l.Close(); err == nil || !strings.Contains(err.Error(), "1 record(s) could not be written") {
		t.Errorf("Close after a lost record: %v", err)
	}
}

// TestLockTimeout: another process holding the lock too long costs the
// records, with a line saying so, and never hangs Close.
func TestLockTimeout(t *testing.T) {
	dir := t.TempDir()
	logs := &logBuffer{}
	l := open(t, dir, Options{LockTimeout: 50 * time.Millisecond, Log: zerolog.New(logs)})
	fd, err := unix.Open(filepath.Join(dir, lockName), unix.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	l.Append(rec("a", 1))
	if _, _, err := l.Last(1); !errors.Is(err, ErrLocked) {
		t.Errorf("Last while locked: %v, want ErrLocked", err)
	}
	if err := l.Close(); err == nil || !strings.Contains(logs.String(), "held by another process") {
		t.Errorf("Close: %v; log %s", err, logs)
	}
	unix.Close(fd)
	if got := gens(last(t, l, 0)); got != "" {
		t.Errorf("history: %q", got)
	}
}

// TestUnreadableLines: lines torn by a crash or spoiled by hand are skipped
// and counted, never the end of the read; the next record after a torn
// line is a line of its own.
func TestUnreadableLines(t *testing.T) {
	dir := t.TempDir()
	line := func(i int) string {
		b, _ := json.Marshal(rec("a", i))
		return string(b) + "\n"
	}
	rotated := line(1) + "not json\n" + line(2)
	current := line(3) + "\n" + `{"event":"upgrade"}` + "\n" + `{}` + "\n" + line(4) + `[1,2]` + "\n" + line(5)[:40]
	os.WriteFile(filepath.Join(dir, FileName+".1"), []byte(rotated), 0o600)
	os.WriteFile(filepath.Join(dir, FileName), []byte(current), 0o600)
	l := open(t, dir, Options{})
	for _, tc := range []struct {
		n       int
		gens    string
		skipped int
	}{
		{1, "4", 2},
		{2, "3 4", 4},
		{3, "2 3 4", 4},
		{0, "1 2 3 4", 5},
	} {
		recs, skipped, err := l.Last(tc.n)
		if err != nil || gens(recs) != tc.gens || skipped != tc.skipped {
			t.Errorf("Last(%d): %s, %d skipped, %v; want %s, %d skipped", tc.n, gens(recs), skipped, err, tc.gens, tc.skipped)
		}
	}
	l.Append(rec("a", 6))
	recs, skipped, err := l.Last(2)
	if err != nil || gens(recs) != "4 6" || skipped != 2 {
		t.Errorf("after the torn line, Last(2): %s, %d skipped, %v; want 4 6, 2 skipped", gens(recs), skipped, err)
	}
}

// TestTwoWriters: two Logs on one directory, as an old supervisor and its
// successor: every line whole, every record there, each writer's in order.
func TestTwoWriters(t *testing.T) {
	const n, max = 300, 4096
	dir := t.TempDir()
	var wg sync.WaitGroup
	for _, name := range []string{"a", "b"} {
		l := open(t, dir, Options{MaxSize: max, Keep: 1000})
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := appendSeq(l, name, n); err != nil {
				t.Error(err)
			}
			if err := l.Close(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	checkWriters(t, dir, max, map[string]int{"a": n, "b": n})

	// And with rotation throwing away the oldest: still whole lines only,
	// and the bound holds.
	dir = t.TempDir()
	for _, name := range []string{"a", "b"} {
		l := open(t, dir, Options{MaxSize: 1024, Keep: 2})
		wg.Add(1)
		go func() {
			defer wg.Done()
			appendSeq(l, name, n)
			l.Close()
		}()
	}
	wg.Wait()
	checkFiles(t, dir, 1024, 2)
}

// TestTwoProcesses: as TestTwoWriters, the other writer a process of its
// own (the test binary, run again).
func TestTwoProcesses(t *testing.T) {
	const n, max = 300, 4096
	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), appendEnv+"="+dir, "HISTORY_TEST_N="+strconv.Itoa(n),
		"HISTORY_TEST_MAX="+strconv.Itoa(max), "HISTORY_TEST_WRITER=child",
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l := open(t, dir, Options{MaxSize: max, Keep: 1000})
	start.Write([]byte("g"))
	if err := appendSeq(l, "parent", n); err != nil {
		t.Error(err)
	}
	if err := l.Close(); err != nil {
		t.Error(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the other writer: %v: %s", err, stderr.String())
	}
	checkWriters(t, dir, max, map[string]int{"parent": n, "child": n})
}

// checkWriters checks that the history in dir holds every writer's
// records, in its order, in whole lines.
func checkWriters(t *testing.T, dir string, max int64, writers map[string]int) {
	t.Helper()
	checkFiles(t, dir, max, 1000)
	l := open(t, dir, Options{Keep: 1000})
	recs := last(t, l, 0)
	next := map[string]int{}
	switches := 0
	for i, r := range recs {
		next[r.Binary]++
		if r.Gen != next[r.Binary] {
			t.Fatalf("writer %s: record %d is generation %d, want %d", r.Binary, i, r.Gen, next[r.Binary])
		}
		if i > 0 && recs[i-1].Binary != r.Binary {
			switches++
		}
	}
	for name, n := range writers {
		if next[name] != n {
			t.Errorf("writer %s: %d records, want %d", name, next[name], n)
		}
	}
	t.Logf("%d records, the writer changing %d times", len(recs), switches)
	if switches == 0 {
		t.Error("the writers took turns only once: they never wrote at the same time")
	}
}

// TestDiskFull fills a small tmpfs: Append's failure is said in the log,
// and once there is room again the next Append writes, after a record of
// what was lost.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to mount a small tmpfs")
	}
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=64k,mode=0700"); err != nil {
		t.Skipf("cannot mount a tmpfs to fill (%v): a container without CAP_SYS_ADMIN?", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmounting %s: %v", mnt, err)
		}
	})
	logs := &logBuffer{}
	l := open(t, filepath.Join(mnt, "state"), Options{Log: zerolog.New(logs)})
	big := func(i int) Record {
		r := rec("a", i)
		r.Reason = strings.Repeat("x", 5000) // more than a page: each record needs new ones
		return r
	}
	l.Append(big(1))
	last(t, l, 1)

	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = f.Write(make([]byte, 4096))
	}
	f.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling the tmpfs: %v", err)
	}

	l.Append(big(2))
	l.Append(big(3))
	recs, skipped, err := l.Last(0)
	if err != nil || gens(recs) != "1" {
		t.Errorf("with the disk full: %s (%d skipped), %v", gens(recs), skipped, err)
	}
	errLines := strings.Count(logs.String(), `"level":"error"`)
	if errLines != 1 || !strings.Contains(logs.String(), "no space left on device") {
		t.Errorf("%d error lines logged, want one saying no space is left:\n%s", errLines, logs)
	}

	os.Remove(filler)
	l.Append(big(4))
	recs, skipped, err = l.Last(0)
	if err != nil || gens(recs) != "1 d2 4" {
		t.Errorf("with room again: %s, %v; want 1 d2 4", gens(recs), err)
	}
	// A write cut short by the full disk leaves half a line: skipped.
	if skipped > 1 {
		t.Errorf("%d lines skipped, want at most the one torn by the full disk", skipped)
	}
	t.Logf("log:\n%s", logs)
}
