package main

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// server is a stand-in game on loopback: it answers each command with
// "OK <command>", and first sends a notice, as a game does after a cold
// start.
func server(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte(noticePrefix + "restarted: your last command may not have been applied; send STATUS to resync\n"))
		r := bufio.NewScanner(c)
		for r.Scan() {
			c.Write([]byte("OK " + r.Text() + "\n"))
			if r.Text() == "QUIT" {
				return
			}
		}
	}()
	return ln.Addr().String()
}

// The client prints every line, notices included, and waits for one reply
// per command before it exits.
func TestClient(t *testing.T) {
	var out strings.Builder
	if err := run(server(t), strings.NewReader("LOGIN alice\n\nWORK\nSTATUS\n"), &out, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"NOTICE restarted", "OK LOGIN alice\n", "OK WORK\n", "OK STATUS\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("output %q lacks %q", got, want)
		}
	}
}

// A server that hangs up (QUIT) ends the wait at once; a server that is
// not there is one clear error.
func TestClientEnds(t *testing.T) {
	var out strings.Builder
	if err := run(server(t), strings.NewReader("QUIT\n"), &out, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	err := run(addr, strings.NewReader("WORK\n"), &out, time.Second)
	if err == nil || !strings.Contains(err.Error(), "is the game running") {
		t.Errorf("no server: %v, want an error that says what to check", err)
	}
}
