package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// gameResult is the final line of a game run: one player's session on one
// connection, WORK after WORK, so that coin = LoginCoin + 5 × Works while
// the session lasts.
type gameResult struct {
	Event     string   `json:"event"` // "result"
	Player    string   `json:"player"`
	LoginCoin int      `json:"login_coin"`
	Works     int      `json:"works"`     // WORK commands answered OK
	LastCoin  int      `json:"last_coin"` // from the last OK reply
	Statuses  []string `json:"statuses"`  // every STATUS reply, in order
	Error     string   `json:"error,omitempty"`
}

// gameStatus is printed for each "status" command.
type gameStatus struct {
	Event   string `json:"event"` // "status"
	Reply   string `json:"reply"`
	Coin    int    `json:"coin"`
	Version string `json:"version"`
	PID     int    `json:"pid"`
	Works   int    `json:"works"`
}

// replyTimeout bounds the wait for one reply; a handover's blackout is far
// shorter, a rollback a few seconds.
const replyTimeout = 20 * time.Second

func runGame(args []string) error {
	fs := flag.NewFlagSet("game", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:7000", "the game server")
	player := fs.String("player", "", "player id")
	pause := fs.Duration("pause", 5*time.Millisecond, "pause between WORKs")
	max := fs.Duration("max", 5*time.Minute, "longest run")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *player == "" {
		return errors.New("-player is required")
	}
	cmds := make(chan string, 16)
	ctx, cancel := commands(*max, func(cmd string) { cmds <- cmd })
	defer cancel()

	res := gameResult{Event: "result", Player: *player}
	s, err := dialGame(*addr)
	if err != nil {
		return err
	}
	defer s.conn.Close()
	reply, err := s.do("LOGIN " + *player)
	if err != nil {
		return err
	}
	res.LoginCoin = field(reply, "coin")
	res.LastCoin = res.LoginCoin
	stdout.emit(map[string]any{"event": "serving", "reply": reply})

	tick := time.NewTicker(*pause)
	defer tick.Stop()
	for ctx.Err() == nil && res.Error == "" {
		select {
		case cmd := <-cmds:
			if cmd != "status" {
				continue
			}
			reply, err := s.do("STATUS")
			if err != nil {
				res.Error = err.Error()
				break
			}
			res.Statuses = append(res.Statuses, reply)
			stdout.emit(gameStatus{Event: "status", Reply: reply, Coin: field(reply, "coin"),
				Version: value(reply, "version"), PID: field(reply, "pid"), Works: res.Works})
		case <-tick.C:
			reply, err := s.do("WORK")
			if err != nil {
				res.Error = err.Error()
				break
			}
			res.Works++
			res.LastCoin = field(reply, "coin")
		case <-ctx.Done():
		}
	}
	if res.Error == "" {
		if _, err := s.do("QUIT"); err != nil && !strings.Contains(err.Error(), "BYE") {
			res.Error = "QUIT: " + err.Error()
		}
	}
	stdout.emit(res)
	return nil
}

// session is one connection to the game.
type session struct {
	conn net.Conn
	r    *bufio.Reader
}

func dialGame(addr string) (*session, error) {
	c, err := net.DialTimeout("tcp", addr, replyTimeout)
	if err != nil {
		return nil, err
	}
	return &session{conn: c, r: bufio.NewReader(c)}, nil
}

// do sends one command and reads its reply; a reply other than "OK ..." is
// an error.
func (s *session) do(cmd string) (string, error) {
	s.conn.SetDeadline(time.Now().Add(replyTimeout))
	if _, err := fmt.Fprintf(s.conn, "%s\n", cmd); err != nil {
		return "", fmt.Errorf("%s: %w", cmd, err)
	}
	line, err := s.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("%s: %w", cmd, err)
	}
	line = strings.TrimSpace(line)
	if !strings.HasPrefix(line, "OK") {
		return line, fmt.Errorf("%s: %s", cmd, line)
	}
	return line, nil
}

// value finds key=value in a reply.
func value(reply, key string) string {
	for _, w := range strings.Fields(reply) {
		if v, ok := strings.CutPrefix(w, key+"="); ok {
			return v
		}
	}
	return ""
}

func field(reply, key string) int {
	n, _ := strconv.Atoi(value(reply, key))
	return n
}
