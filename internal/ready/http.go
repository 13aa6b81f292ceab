package ready

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"time"
)

// The http probe speaks just enough HTTP/1.1 to read a status code: one GET
// per attempt on a new connection, closed after the status line. It is
// written out here, not taken from net/http, because the supervisor's binary
// is also the exec shim that every worker start runs, and net/http (with
// crypto/tls) would make each of those starts slower. Redirects are not
// followed: a 3xx is not ready.

// httpAttempt bounds one attempt: connect, request, status line.
const httpAttempt = time.Second

// maxResponseHead bounds what one attempt reads: any informational (1xx)
// responses and the final status line.
const maxResponseHead = 16 << 10

// httpTarget is a parsed http probe URL.
type httpTarget struct {
	addr    string // HOST:PORT to dial
	request []byte // the whole GET request
}

func parseHTTP(s string) (httpTarget, error) {
	u, err := url.Parse(s)
	switch {
	case err == nil && u.Scheme == "https":
		return httpTarget{}, fmt.Errorf("ready: %q: https is not supported: probe a plain http:// URL, such as an admin port on loopback", s)
	case err != nil || u.Scheme != "http" || u.Host == "" || u.Hostname() == "":
		return httpTarget{}, fmt.Errorf("ready: %q is not a URL: want http://HOST:PORT/PATH", s)
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\n"
	if u.User != nil {
		pw, _ := u.User.Password()
		req += "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+pw)) + "\r\n"
	}
	req += "User-Agent: supervisor-ready-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
	return httpTarget{addr: net.JoinHostPort(u.Hostname(), port), request: []byte(req)}, nil
}

// ok makes one attempt and reports whether the answer was 2xx. It gives up
// at httpAttempt or when ctx ends, whichever is first.
func (t httpTarget) ok(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, httpAttempt)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return false
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	if c.SetDeadline(deadline) != nil {
		return false
	}
	// A context cancelled early (the supervisor gave up on the worker) ends
	// a read or write under way at once.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := c.Write(t.request); err != nil {
		return false
	}
	code, err := readStatus(bufio.NewReaderSize(io.LimitReader(c, maxResponseHead), 1024))
	return err == nil && code >= 200 && code <= 299
}

var errMalformed = errors.New("malformed HTTP response")

// readStatus returns the status code of the final response in r, skipping
// informational (1xx) responses and their headers.
func readStatus(r *bufio.Reader) (int, error) {
	for {
		line, err := readLine(r)
		if err != nil {
			return 0, err
		}
		code, ok := parseStatusLine(line)
		if !ok {
			return 0, errMalformed
		}
		if code >= 200 || code == 101 {
			return code, nil
		}
		for { // an informational response's headers, up to the blank line
			h, err := readLine(r)
			if err != nil {
				return 0, err
			}
			if len(h) == 0 {
				break
			}
		}
	}
}

// readLine reads one line, without its CRLF (or bare LF). A line longer than
// r's buffer is malformed.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	switch {
	case err == bufio.ErrBufferFull:
		return nil, errMalformed
	case err != nil:
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// parseStatusLine reads "HTTP/1.x NNN reason"; the reason may be empty or
// missing.
func parseStatusLine(line []byte) (int, bool) {
	const proto = len("HTTP/1.x")
	if len(line) < proto+4 || string(line[:len("HTTP/1.")]) != "HTTP/1." ||
		line[proto-1] < '0' || line[proto-1] > '9' || line[proto] != ' ' {
		return 0, false
	}
	code := 0
	for _, c := range line[proto+1 : proto+4] {
		if c < '0' || c > '9' {
			return 0, false
		}
		code = code*10 + int(c-'0')
	}
	if len(line) > proto+4 && line[proto+4] != ' ' {
		return 0, false
	}
	return code, code >= 100
}
