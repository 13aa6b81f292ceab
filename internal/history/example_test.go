package history_test

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/procswitch/supervisor/internal/history"
)

func ExampleLog() {
	dir, _ := os.MkdirTemp("", "history-example-")
	defer os.RemoveAll(dir)

	h, err := history.Open(dir, history.Options{}) // the defaults: 1 MiB, 2 rotated files
	if err != nil {
		fmt.Println(err)
		return
	}
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	h.Append(history.Record{Time: at, Event: history.EventStart, Trigger: history.TriggerStart, Gen: 1, Result: history.ResultOK})
	h.Append(history.Record{Time: at.Add(time.Hour), Event: history.EventUpgrade, Trigger: history.TriggerSIGHUP,
		Gen: 2, FromGen: 1, Result: history.ResultFailed, Kind: "exited-before-ready"})
	h.Close() // what is queued is written and fsynced

	recs, skipped, err := h.Last(10)
	for _, r := range recs {
		line := fmt.Sprint(r.Time.Format(time.TimeOnly), " ", r.Event, " ", r.Trigger, " gen ", r.Gen, " ", r.Result, " ", r.Kind)
		fmt.Println(strings.TrimSpace(line))
	}
	fmt.Println(skipped, "lines skipped;", err)
	// Output:
	// 10:00:00 start start gen 1 ok
	// 11:00:00 upgrade sighup gen 2 failed exited-before-ready
	// 0 lines skipped; <nil>
}
