// Command client is a small line client for the example game: what `nc`
// would do, for a machine without netcat. It sends each line of its input
// as a command and prints every line the server sends, replies and the
// server's own NOTICE lines alike, as they arrive. At the end of its input
// it waits for the replies still due (one per command, a NOTICE is not
// one), at most --wait, then exits.
//
//	go run ./example-game/gameserver/client                        # type commands; Ctrl-D ends
//	printf 'LOGIN alice\nWORK\nSTATUS\n' | go run ./example-game/gameserver/client
//
// Typed commands go out one at a time, so a connection kept open across a
// hot update (supervisor ctl reload, or an upgrade) shows the new rules on
// the same session.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

// noticePrefix begins a line the server sends on its own, not a reply.
const noticePrefix = "NOTICE "

func main() {
	addr := flag.String("addr", "127.0.0.1:7000", "the game's `address`")
	wait := flag.Duration("wait", 5*time.Second, "how long to wait for the replies still due at the end of the input")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "client: unexpected argument %q: commands come on standard input\n", flag.Arg(0))
		os.Exit(2)
	}
	if err := run(*addr, os.Stdin, os.Stdout, *wait); err != nil {
		fmt.Fprintf(os.Stderr, "client: %v\n", err)
		os.Exit(1)
	}
}

// run sends in's lines to the game at addr and copies what it sends to out.
func run(addr string, in io.Reader, out io.Writer, wait time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("%w (is the game running? see example-game/gameserver/README.md)", err)
	}
	defer c.Close()
	replies := make(chan struct{}, 1024) // one per reply line
	done := make(chan error, 1)
	go func() { done <- copyLines(c, out, replies) }()

	sent := 0
	lines := bufio.NewScanner(in)
	for lines.Scan() {
		cmd := strings.TrimSpace(lines.Text())
		if cmd == "" {
			continue
		}
		if _, err := io.WriteString(c, cmd+"\n"); err != nil {
			return err
		}
		sent++
	}
	if err := lines.Err(); err != nil {
		return err
	}
	deadline := time.After(wait)
	for got := 0; got < sent; got++ {
		select {
		case <-replies:
		case err := <-done: // the server closed the connection (QUIT's BYE, a shutdown)
			return err
		case <-deadline:
			return fmt.Errorf("%d of %d replies did not come within --wait %v", sent-got, sent, wait)
		}
	}
	return nil
}

// copyLines copies the server's lines to out, and signals each reply.
func copyLines(c net.Conn, out io.Writer, replies chan<- struct{}) error {
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if line != "" {
			fmt.Fprint(out, line)
			if !strings.HasSuffix(line, "\n") {
				fmt.Fprintln(out)
			}
			if !strings.HasPrefix(line, noticePrefix) {
				replies <- struct{}{}
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
