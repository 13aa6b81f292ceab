package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// load is the client side of one run: clients goroutines, each sending
// requests one after the other, on one kept-alive connection or on a new
// connection each. It parses just enough HTTP/1.1 to check each answer, so
// that the client costs the same little CPU whichever way the server serves.
type load struct {
	addr      string
	keepAlive bool
	done      atomic.Uint64 // answered requests
	failed    atomic.Uint64
	stop      atomic.Bool
	mu        sync.Mutex
	firstErr  error
}

const (
	requestKeepAlive = "GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"
	requestClose     = "GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
	ioBound          = 5 * time.Second // one request, at most
)

// run starts the clients and returns a function that stops them and waits.
func (l *load) run(clients int) (stop func()) {
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if l.keepAlive {
				l.keepAliveClient()
			} else {
				l.newConnClient()
			}
		}()
	}
	return func() { l.stop.Store(true); wg.Wait() }
}

func (l *load) keepAliveClient() {
	var c net.Conn
	var br *bufio.Reader
	for !l.stop.Load() {
		if c == nil {
			var err error
			if c, err = net.DialTimeout("tcp", l.addr, ioBound); err != nil {
				l.fail(err)
				continue
			}
			br = bufio.NewReader(c)
		}
		c.SetDeadline(time.Now().Add(ioBound))
		closing, err := roundTrip(c, br, requestKeepAlive)
		if err != nil {
			l.fail(err)
		} else {
			l.done.Add(1)
		}
		if err != nil || closing {
			c.Close()
			c = nil
		}
	}
	if c != nil {
		c.Close()
	}
}

func (l *load) newConnClient() {
	br := bufio.NewReader(nil)
	for !l.stop.Load() {
		c, err := net.DialTimeout("tcp", l.addr, ioBound)
		if err != nil {
			l.fail(err)
			continue
		}
		c.SetDeadline(time.Now().Add(ioBound))
		br.Reset(c)
		_, err = roundTrip(c, br, requestClose)
		if err == nil { // the server closes: wait for it, so TIME_WAIT is on its side
			_, err = br.ReadByte()
			if errors.Is(err, io.EOF) {
				err = nil
			} else if err == nil {
				err = errors.New("data after the answer")
			}
		}
		c.Close()
		if err != nil {
			l.fail(err)
		} else {
			l.done.Add(1)
		}
	}
}

func (l *load) fail(err error) {
	l.failed.Add(1)
	l.mu.Lock()
	if l.firstErr == nil {
		l.firstErr = err
	}
	l.mu.Unlock()
	if !l.stop.Load() {
		time.Sleep(10 * time.Millisecond) // do not spin on a server that is gone
	}
}

// roundTrip writes req and reads a 200 answer with a Content-Length body.
// closing reports "Connection: close".
func roundTrip(c net.Conn, br *bufio.Reader, req string) (closing bool, err error) {
	if _, err := io.WriteString(c, req); err != nil {
		return false, err
	}
	line, err := br.ReadSlice('\n')
	if err != nil {
		return false, err
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
		return false, fmt.Errorf("answer %q", line)
	}
	length := -1
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return false, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		k, v, _ := bytes.Cut(line, []byte(":"))
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(v)); err != nil {
				return false, fmt.Errorf("Content-Length %q", v)
			}
		case bytes.EqualFold(k, []byte("Connection")) && bytes.EqualFold(v, []byte("close")):
			closing = true
		}
	}
	if length < 0 {
		return false, errors.New("answer without Content-Length")
	}
	_, err = br.Discard(length)
	return closing, err
}
