package history

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// osFuncs are the file system calls whose order makes the history durable;
// tests wrap them to watch that order or to fail them.
type osFuncs struct {
	write   func(f *os.File, b []byte) (int, error)
	sync    func(f *os.File) error
	rename  func(from, to string) error
	syncDir func(dir string) error
}

var realOS = osFuncs{
	write:   (*os.File).Write,
	sync:    (*os.File).Sync,
	rename:  os.Rename,
	syncDir: syncDir,
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// writer is the writer goroutine's state: what it failed to write.
type writer struct {
	log  *Log
	lost int64  // records lost since the last successful write
	why  string // why the last of them were
}

// write writes a batch of queued items: a record of the losses before each
// that had some, its line, and at the head a record of what the last
// batches failed to write. Then it tells the flushes waiting.
func (w *writer) write(batch []item) {
	var lines [][]byte
	var weights []int64 // the records each line stands for
	add := func(line []byte, weight int64) {
		lines = append(lines, line)
		weights = append(weights, weight)
	}
	if w.lost > 0 {
		add(droppedLine(w.lost, w.why), w.lost)
	}
	for _, it := range batch {
		if it.dropped > 0 {
			add(droppedLine(it.dropped, fmt.Sprintf("the history writer fell behind: its queue of %d records was full", w.log.opts.Queue)), it.dropped)
		}
		if it.line != nil {
			add(it.line, 1)
		}
	}
	if len(lines) > 0 {
		written, err := w.log.appendLines(lines)
		w.done(written, err, weights)
	}
	for _, it := range batch {
		if it.flushed != nil {
			close(it.flushed)
		}
	}
}

// done accounts for a write of which the first written lines reached the
// disk; err says why the others did not.
func (w *writer) done(written int, err error, weights []int64) {
	log := w.log.opts.Log
	if err == nil {
		if w.lost > 0 {
			log.Info().Str("dir", w.log.dir).Int64("lost", w.lost).Msg("history: writing again; the history records what was lost")
		}
		w.lost = 0
		return
	}
	first := w.lost == 0
	w.lost = 0 // the line of the old losses, if any, was not written: it counts again below
	for _, n := range weights[written:] {
		w.lost += n
	}
	w.why = "writing them failed: " + err.Error()
	if first {
		log.Error().Err(err).Str("dir", w.log.dir).Int64("lost", w.lost).
			Msg("history: cannot write the upgrade history: records are lost until it works again (each new record tries)")
	}
}

// droppedLine is the line of an EventDropped record.
func droppedLine(n int64, why string) []byte {
	lost := strconv.FormatInt(n, 10) + " history records"
	if n == 1 {
		lost = "1 history record"
	}
	b, _ := json.Marshal(Record{Time: time.Now(), Event: EventDropped, Result: ResultLost, Lost: lost, Reason: why, PID: os.Getpid()})
	return append(b, '\n')
}

// appendLines appends whole lines to the history file under the lock,
// rotating it before a line would take it past MaxSize, and fsyncs each
// write (and the directory after a rotation or a creation) before it
// returns. written is how many of the lines are on disk.
func (l *Log) appendLines(lines [][]byte) (written int, err error) {
	unlock, err := l.lock(true)
	if err != nil {
		return 0, err
	}
	defer unlock()
	f, size, err := l.openForAppend()
	if err != nil {
		return 0, err
	}
	defer func() { f.Close() }()
	var torn []byte
	if size > 0 && !endsWithNewline(f, size) {
		torn = []byte("\n") // a crash tore the last line: leave it a line of its own
	}
	for written < len(lines) {
		if size > 0 && size+int64(len(torn)+len(lines[written])) > l.opts.MaxSize {
			f.Close()
			if f, err = l.rotate(); err != nil {
				return written, err
			}
			size, torn = 0, nil
		}
		buf, n := torn, 0
		for written+n < len(lines) && (n == 0 || size+int64(len(buf)+len(lines[written+n])) <= l.opts.MaxSize) {
			buf = append(buf, lines[written+n]...)
			n++
		}
		if _, err := l.sys.write(f, buf); err != nil {
			return written, fmt.Errorf("history: %w", err)
		}
		if err := l.sys.sync(f); err != nil {
			return written, fmt.Errorf("history: %w", err)
		}
		size += int64(len(buf))
		written += n
		torn = nil
	}
	return written, nil
}

func (l *Log) path() string { return filepath.Join(l.dir, FileName) }

// rotated is the name of the i-th rotated file, 0 the history file itself.
func (l *Log) rotated(i int) string {
	if i == 0 {
		return l.path()
	}
	return l.path() + "." + strconv.Itoa(i)
}

// openForAppend opens the history file to append, creating it durably if
// missing, and says how big it is.
func (l *Log) openForAppend() (*os.File, int64, error) {
	_, statErr := os.Lstat(l.path())
	f, err := os.OpenFile(l.path(), os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("history: %w", err)
	}
	if errors.Is(statErr, fs.ErrNotExist) {
		if err := l.sys.syncDir(l.dir); err != nil {
			f.Close()
			return nil, 0, fmt.Errorf("history: %w", err)
		}
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("history: %w", err)
	}
	return f, fi.Size(), nil
}

// endsWithNewline says if the file's last byte ends a line; when it cannot
// tell, it says yes.
func endsWithNewline(f *os.File, size int64) bool {
	var b [1]byte
	n, err := f.ReadAt(b[:], size-1)
	return err != nil || n != 1 || b[0] == '\n'
}

// rotate shifts FileName.i to FileName.i+1 (the last one falls off),
// FileName to FileName.1, creates a new FileName, and fsyncs the directory
// before anything is written to the new file.
func (l *Log) rotate() (*os.File, error) {
	for i := l.opts.Keep - 1; i >= 0; i-- {
		if err := l.sys.rename(l.rotated(i), l.rotated(i+1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("history: rotating: %w", err)
		}
	}
	f, err := os.OpenFile(l.path(), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	if err := l.sys.syncDir(l.dir); err != nil {
		f.Close()
		return nil, fmt.Errorf("history: %w", err)
	}
	return f, nil
}

// lock takes the directory's lock, exclusive (to write) or shared (to
// read), waiting at most LockTimeout for another process to let go of it.
// Each call opens the lock file anew: flock(2) locks belong to an open
// file, so the writer and a reader of one Log exclude each other too.
//
// The wait is flock's own, on a goroutine, so that the kernel wakes us as
// soon as the lock is free; a wait that times out is left to end by itself
// (it unlocks at once), and the next call waits for it rather than pile up
// waiters behind a lock that some process holds for good.
func (l *Log) lock(exclusive bool) (unlock func(), err error) {
	path := filepath.Join(l.dir, lockName)
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	timeout := time.NewTimer(l.opts.LockTimeout)
	defer timeout.Stop()
	if ended := l.abandoned.Load(); ended != nil {
		select {
		case <-*ended:
		case <-timeout.C:
			return nil, fmt.Errorf("%w for more than %v (%s)", ErrLocked, l.opts.LockTimeout, path)
		}
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("history: %w", &fs.PathError{Op: "open", Path: path, Err: err})
	}
	unlock = func() { unix.Close(fd) } // closing the file unlocks it
	if err := unix.Flock(fd, how|unix.LOCK_NB); err == nil {
		return unlock, nil
	}
	got := make(chan error, 1)
	go func() { got <- flockWait(fd, how) }()
	select {
	case err := <-got:
		if err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("history: locking %s: %w", path, err)
		}
		return unlock, nil
	case <-timeout.C:
		ended := make(chan struct{})
		l.abandoned.Store(&ended)
		go func() {
			<-got
			unix.Close(fd)
			l.abandoned.CompareAndSwap(&ended, nil)
			close(ended)
		}()
		return nil, fmt.Errorf("%w for more than %v (%s)", ErrLocked, l.opts.LockTimeout, path)
	}
}

func flockWait(fd, how int) error {
	for {
		if err := unix.Flock(fd, how); err != unix.EINTR {
			return err
		}
	}
}
