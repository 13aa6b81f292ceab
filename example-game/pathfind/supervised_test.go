package main

import (
	"bufio"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// notifySock is the supervisor's end of a worker's NOTIFY_SOCKET.
type notifySock struct {
	path string
	msgs chan string // one per line of each datagram
}

func newNotifySock(t *testing.T) *notifySock {
	t.Helper()
	n := &notifySock{path: filepath.Join(t.TempDir(), "notify"), msgs: make(chan string, 10000)}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return // closed by the cleanup
			}
			for _, line := range strings.Split(string(buf[:k]), "\n") {
				n.msgs <- line
			}
		}
	}()
	return n
}

// expect skips notifications until one that starts with want.
func (n *notifySock) expect(t *testing.T, want string) string {
	t.Helper()
	deadline := time.After(waitBound)
	for {
		select {
		case msg := <-n.msgs:
			if strings.HasPrefix(msg, want) {
				return msg
			}
		case <-deadline:
			t.Fatalf("no notification %q in %v", want, waitBound)
		}
	}
}

// startWorker starts pathfind as the supervisor would: the listening socket
// as fd 3, named "http", with LISTEN_PID set by the helper's shim mode, a
// notify socket and a watchdog. --listen names an address that cannot be
// bound, so serving proves that the passed socket is used.
func startWorker(t *testing.T, sock *os.File, gen int) (*proc, *notifySock) {
	t.Helper()
	n := newNotifySock(t)
	g := strconv.Itoa(gen)
	env := []string{
		helperEnv + "=shim", helperVersionEnv + "=gen" + g,
		"LISTEN_FDS=1", "LISTEN_FDNAMES=http", "NOTIFY_SOCKET=" + n.path,
		"WATCHDOG_USEC=100000", "SUPERVISOR_GENERATION=" + g,
	}
	p := startCmd(t, os.Args[0], env, []*os.File{sock}, "--listen", "256.0.0.1:1")
	n.expect(t, "READY=1")
	return p, n
}

// TestBinarySupervised runs pathfind under a stand-in supervisor: it serves
// the passed socket, speaks sd_notify (ready, status, watchdog, stopping),
// closes a keep-alive connection cleanly when draining, and a request that
// queues on the shared socket after it exits is served by the next worker.
func TestBinarySupervised(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sock, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	addr := ln.Addr().String()

	p1, n1 := startWorker(t, sock, 1)
	if p1.addr != addr {
		t.Fatalf("worker serves %s, want the passed socket %s", p1.addr, addr)
	}
	n1.expect(t, "STATUS=serving 512x512 map on "+addr)
	checkServes(t, p1, "gen1")
	n1.expect(t, "WATCHDOG=1")

	p1.signal(t, syscall.SIGTERM)
	n1.expect(t, "STOPPING=1")
	var health struct{ Status string }
	res := p1.get(t, "/healthz", &health) // on the idle keep-alive connection
	if res.StatusCode != 200 || !res.Close {
		t.Errorf("request while draining: status %d, Connection: close %v; want 200 and true", res.StatusCode, res.Close)
	}
	p1.wait(t)

	conn, err := net.Dial("tcp", addr) // no worker: queues on the socket
	if err != nil {
		t.Fatalf("connect between workers: %v", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: pathfind\r\nConnection: close\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	p2, _ := startWorker(t, sock, 2)
	conn.SetReadDeadline(time.Now().Add(waitBound))
	res, err = http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("queued request: %v", err)
	}
	res.Body.Close()
	checkHeaders(t, res, strconv.Itoa(p2.cmd.Process.Pid), "gen2")
	if res.StatusCode != 200 {
		t.Errorf("queued request: status %d, want 200", res.StatusCode)
	}
	p2.stop(t, syscall.SIGTERM)
}
