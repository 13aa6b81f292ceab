package history

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// FileName is the history's file in its directory; rotated files are
// FileName.1 (the newer) to FileName.Keep.
const FileName = "history.jsonl"

// lockName is the file flock(2) serializes writers (and rotations) on. It
// is never renamed, unlike the history file, so every process locks the
// same inode.
const lockName = "history.lock"

// Defaults, used for the zero values of Options.
//
// A record is 200 to 400 bytes, so DefaultMaxSize holds some 3000 of them:
// years of upgrades at a few a day, and still days of a worker that crashes
// every minute. With DefaultKeep rotated files the history never takes more
// than 3 MiB of the state directory, and `ctl history` reads all of it in
// milliseconds. DefaultQueue absorbs a burst (every worker of a generation
// crashing at once, and their restarts) while the disk is slow to fsync; a
// record beyond it is dropped and counted rather than stall the
// supervisor's loop. DefaultLockTimeout is far beyond the write and fsync
// of a few kilobytes that another supervisor holds the lock for.
const (
	DefaultMaxSize     = 1 << 20
	DefaultKeep        = 2
	DefaultQueue       = 256
	DefaultLockTimeout = 10 * time.Second
)

// Options tune a Log; the zero value is the defaults above.
type Options struct {
	MaxSize     int64         // bytes FileName may hold before it is rotated; 0: DefaultMaxSize
	Keep        int           // rotated files kept, the older removed; 0: DefaultKeep
	Queue       int           // records Append queues before it drops them; 0: DefaultQueue
	LockTimeout time.Duration // to wait for another supervisor's lock; 0: DefaultLockTimeout
	// Log is told, one line each, when writing fails (records are lost)
	// and when it works again. The zero Logger says nothing.
	Log zerolog.Logger

	sys *osFuncs // tests only: the file system calls; nil: the real ones
}

var (
	// ErrClosed is Append's error after Close.
	ErrClosed = errors.New("history: closed")
	// ErrLocked means another process held the history's lock for longer
	// than Options.LockTimeout.
	ErrLocked = errors.New("history: the lock is held by another process")
)

// Log appends records to the history in a directory, from one writer
// goroutine, and reads the last ones back. Its methods may be called from
// any goroutine.
type Log struct {
	dir  string
	opts Options
	sys  osFuncs

	mu      sync.RWMutex // read-held to queue, write-held by Close
	closed  bool
	queue   chan item
	dropped atomic.Int64  // records Append dropped since it last queued one
	done    chan struct{} // closed when the writer has returned
	err     error         // the writer's last loss, for Close; written by the writer before done

	abandoned atomic.Pointer[chan struct{}] // closed when a wait for the lock that timed out ends
}

// item is one entry of the writer's queue.
type item struct {
	line    []byte        // a record's JSON line, newline included; nil for a flush
	dropped int64         // records dropped (the queue was full) just before this one
	flushed chan struct{} // if set, closed once everything before it is written or lost
}

// Open opens (or starts) the history in dir, which it creates, mode 0700,
// if missing. Close it when done.
func Open(dir string, opts Options) (*Log, error) {
	if dir == "" {
		return nil, errors.New("history: no directory")
	}
	opts = opts.withDefaults()
	l := &Log{dir: dir, opts: opts, sys: realOS, done: make(chan struct{})}
	if opts.sys != nil {
		l.sys = *opts.sys
	}
	if err := l.makeDir(); err != nil {
		return nil, err
	}
	// The lock file now: a directory we cannot write to fails here rather
	// than at the first record.
	unlock, err := l.lock(true)
	if err != nil {
		return nil, err
	}
	unlock()
	l.queue = make(chan item, opts.Queue)
	go l.run()
	return l, nil
}

func (o Options) withDefaults() Options {
	if o.MaxSize <= 0 {
		o.MaxSize = DefaultMaxSize
	}
	if o.Keep <= 0 {
		o.Keep = DefaultKeep
	}
	if o.Queue <= 0 {
		o.Queue = DefaultQueue
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	return o
}

// makeDir creates the directory if missing, durably.
func (l *Log) makeDir() error {
	if _, err := os.Stat(l.dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(l.dir, 0o700); err != nil {
		return fmt.Errorf("history: %w", err)
	}
	if err := l.sys.syncDir(filepath.Dir(l.dir)); err != nil {
		return fmt.Errorf("history: %w", err)
	}
	return nil
}

// Dir is the directory the history is in.
func (l *Log) Dir() string { return l.dir }

// Append queues r to be written; it never waits for the disk. Time is set
// to now and PID to this process's if zero. The error is ErrClosed after
// Close, or r does not encode (a NaN). A full queue is no error: r is
// dropped, and a record of EventDropped later says how many were. Errors
// of the writing itself go to Options.Log.
func (l *Log) Append(r Record) error {
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	if r.PID == 0 {
		r.PID = os.Getpid()
	}
	line, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return ErrClosed
	}
	it := item{line: append(line, '\n'), dropped: l.dropped.Swap(0)}
	select {
	case l.queue <- it:
	default:
		if l.dropped.Add(it.dropped+1) == 1 {
			l.opts.Log.Warn().Str("dir", l.dir).Int("queue", l.opts.Queue).
				Msg("history: the writer fell behind: records are dropped, and the history will say how many")
		}
	}
	return nil
}

// Flush waits up to d until everything queued before it is written (or
// lost), as before an exec of this process (the supervisor's re-exec in
// place), which ends the writer; it reports whether that happened in time.
func (l *Log) Flush(d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		l.flush()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// flush waits until everything queued before it is written (or lost). It
// returns at once after Close, which flushed.
func (l *Log) flush() {
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return
	}
	done := make(chan struct{})
	l.queue <- item{dropped: l.dropped.Swap(0), flushed: done}
	l.mu.RUnlock()
	<-done
}

// Close writes what is queued, waits for it, and stops the writer. Its
// error says if the last records could not be written (Options.Log said
// why, too). Append fails after Close; Last still reads.
func (l *Log) Close() error {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.queue)
	}
	l.mu.Unlock()
	<-l.done
	return l.err
}

// run is the writer goroutine: it writes what is queued, in order, as many
// records at once as are waiting.
func (l *Log) run() {
	defer close(l.done)
	w := &writer{log: l}
	for it := range l.queue {
		batch := []item{it}
		open := true
		for open && len(batch) < l.opts.Queue {
			select {
			case it, ok := <-l.queue:
				if ok {
					batch = append(batch, it)
				}
				open = ok
			default:
				open = false
			}
		}
		w.write(batch)
	}
	// Closed: no Append since can have dropped more.
	if n := l.dropped.Swap(0); n > 0 {
		w.write([]item{{dropped: n}})
	}
	if w.lost > 0 {
		l.err = fmt.Errorf("history: %d record(s) could not be written: %s", w.lost, w.why)
	}
}
