package procwatch

import (
	"bufio"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"time"
)

// Entry is one line of a process's output.
type Entry struct {
	At     time.Time      // when it was read
	Raw    string         // the line, without its newline
	Fields map[string]any // the JSON object; nil when the line is not one
}

// Time is when the process logged the entry, by its "time" field, or At when
// that field does not parse.
func (e Entry) Time() time.Time {
	if t, err := time.Parse(time.RFC3339Nano, e.Str("time")); err == nil {
		return t
	}
	return e.At
}

// Msg is the "message" field.
func (e Entry) Msg() string { return e.Str("message") }

// Str is a string field; "" when it is missing or not a string.
func (e Entry) Str(key string) string {
	s, _ := e.Fields[key].(string)
	return s
}

// Bool is a boolean field; false when it is missing or not a boolean.
func (e Entry) Bool(key string) bool {
	b, _ := e.Fields[key].(bool)
	return b
}

// Num is a numeric field; ok is false when it is missing or not a number.
func (e Entry) Num(key string) (f float64, ok bool) {
	f, ok = e.Fields[key].(float64)
	return f, ok
}

// Int is a numeric field as an int; 0 when it is missing.
func (e Entry) Int(key string) int {
	f, _ := e.Num(key)
	return int(f)
}

// Ints is a field holding an array of numbers, such as "pids".
func (e Entry) Ints(key string) []int {
	a, _ := e.Fields[key].([]any)
	var out []int
	for _, v := range a {
		if f, ok := v.(float64); ok {
			out = append(out, int(f))
		}
	}
	return out
}

// Is says whether the entry is the JSON message msg with every key of keys
// present.
func (e Entry) Is(msg string, keys ...string) bool {
	if e.Fields == nil || e.Msg() != msg {
		return false
	}
	for _, k := range keys {
		if _, ok := e.Fields[k]; !ok {
			return false
		}
	}
	return true
}

// Log collects the lines of a process's output as they come. It ends (EOF)
// when every process holding the write end of the pipe has exited: a
// supervisor's workers share its stderr.
type Log struct {
	mu      sync.Mutex
	entries []Entry
	eof     bool
	changed chan struct{} // closed and replaced on every change
}

func newLog() *Log { return &Log{changed: make(chan struct{})} }

// read reads f to its end, then closes it.
func (l *Log) read(f *os.File) {
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		e := Entry{At: time.Now(), Raw: sc.Text()}
		if strings.HasPrefix(e.Raw, "{") {
			var m map[string]any
			if json.Unmarshal([]byte(e.Raw), &m) == nil {
				e.Fields = m
			}
		}
		l.update(func() { l.entries = append(l.entries, e) })
	}
	l.update(func() { l.eof = true })
}

func (l *Log) update(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f()
	close(l.changed)
	l.changed = make(chan struct{})
}

// since returns the entries from index i on, whether the output has ended,
// and a channel closed at the next change.
func (l *Log) since(i int) ([]Entry, bool, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i = min(i, len(l.entries))
	return append([]Entry(nil), l.entries[i:]...), l.eof, l.changed
}

// Len is the number of lines read so far: the index of the next one.
func (l *Log) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

// All returns every line read so far.
func (l *Log) All() []Entry {
	e, _, _ := l.since(0)
	return e
}

// Tail returns the last n lines, each indented and ending in a newline, for
// error messages.
func (l *Log) Tail(n int) string {
	all := l.All()
	var b strings.Builder
	for _, e := range all[max(0, len(all)-n):] {
		b.WriteString("    | " + e.Raw + "\n")
	}
	return b.String()
}

// WaitEOF waits up to d for the output to end, and reports whether it did.
func (l *Log) WaitEOF(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		_, eof, changed := l.since(1 << 30)
		if eof {
			return true
		}
		select {
		case <-changed:
		case <-timer.C:
			return false
		}
	}
}
