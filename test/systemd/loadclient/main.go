// Command loadclient generates load inside the systemd test container (which
// has its own network namespace) for package test/systemd, and reports what
// it saw as JSON lines on stdout. It is meant to be run by those tests, not
// by hand.
//
//	loadclient http -url URL [-keepalive N] [-newconn N] [-max D]
//	loadclient game -addr HOST:PORT -player ID [-max D]
//
// It runs until its stdin ends (the test closes the pipe), a SIGTERM or
// SIGINT, or -max. Lines on stdin are commands:
//
//	mark     http: note the moment; the result then counts the requests begun
//	         before it, and those of them still in flight at it
//	status   game: send STATUS on the session's connection and print the reply
//
// Output, one JSON object per line: {"event":"serving",...} once the first
// request succeeded (http) or the player logged in (game); {"event":"mark"}
// or {"event":"status",...} per command; {"event":"result",...} at the end.
// Exit status 0 unless the arguments or the output failed: failures under
// load are data, in the result.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "loadclient: run by test/systemd: loadclient http|game [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "http":
		err = runHTTP(os.Args[2:])
	case "game":
		err = runGame(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q: want http or game", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadclient: %v\n", err)
		os.Exit(2)
	}
}

// out writes one JSON object per line; safe for concurrent use.
type out struct {
	mu  sync.Mutex
	enc *json.Encoder
}

var stdout = &out{enc: json.NewEncoder(os.Stdout)}

func (o *out) emit(v any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.enc.Encode(v); err != nil {
		fmt.Fprintf(os.Stderr, "loadclient: stdout: %v\n", err)
		os.Exit(2)
	}
}

// commands reads stdin: each line goes to handle; the returned context ends
// at EOF, on SIGTERM or SIGINT, or after max.
func commands(max time.Duration, handle func(cmd string)) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), max)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		defer cancel()
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			if cmd := strings.TrimSpace(sc.Text()); cmd != "" {
				handle(cmd)
			}
		}
	}()
	return ctx, func() { stop(); cancel() }
}

func parse(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return nil
}
