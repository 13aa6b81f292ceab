package history

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
)

// Last returns the last n records (every one when n <= 0), oldest first,
// from the history file and its rotated files, once what Append queued
// before is written. A line that is no record (torn by a crash, or spoiled
// by a hand edit) is skipped and counted in skipped, among the lines read
// to find the n records; it fails nothing. err is for a file that cannot
// be read at all. Last works after Close too.
func (l *Log) Last(n int) (recs []Record, skipped int, err error) {
	l.flush()
	unlock, err := l.lock(false)
	if err != nil {
		return nil, 0, err
	}
	defer unlock()
	for i := 0; i <= l.opts.Keep; i++ {
		b, err := os.ReadFile(l.rotated(i))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, 0, fmt.Errorf("history: %w", err)
		}
		var s int
		recs, s = lastRecords(b, n, recs)
		skipped += s
		if n > 0 && len(recs) == n {
			break
		}
	}
	slices.Reverse(recs)
	return recs, skipped, nil
}

// lastRecords appends to newestFirst the records of file, newest first,
// until it holds n, and counts the lines it skipped.
func lastRecords(file []byte, n int, newestFirst []Record) ([]Record, int) {
	skipped := 0
	for end := len(file); end > 0 && (n <= 0 || len(newestFirst) < n); {
		start := bytes.LastIndexByte(file[:end], '\n') + 1
		if start == end { // an empty line, or the newline that ends the file
			end--
			continue
		}
		line := file[start:end]
		end = start
		if r, ok := parseRecord(line); ok {
			newestFirst = append(newestFirst, r)
		} else if len(bytes.TrimSpace(line)) > 0 {
			skipped++
		}
	}
	return newestFirst, skipped
}

// parseRecord decodes a line; one without an event or a time is no record.
// Fields it does not know (a newer supervisor's) are ignored.
func parseRecord(line []byte) (Record, bool) {
	var r Record
	if err := json.Unmarshal(line, &r); err != nil || r.Event == "" || r.Time.IsZero() {
		return Record{}, false
	}
	return r, true
}
