package control

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/procswitch/supervisor/internal/history"
	"github.com/procswitch/supervisor/internal/supervisor"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// Limits on what a client may do to the server.
const (
	MaxRequest     = 4096            // bytes in a request line, its newline not counted
	RequestTimeout = 5 * time.Second // to send the whole request line
	MaxConns       = 16              // connections served at once; more are turned away
)

// Supervisor is what the control socket drives.
type Supervisor interface {
	Status() (supervisor.Status, bool)
	UpgradeBy(trigger string) <-chan supervisor.Result
	Rollback(to int) <-chan supervisor.Result
	Reload(trigger string) <-chan supervisor.Result
	Stop()
}

// Option adds to what NewServer serves.
type Option func(*Server)

// WithHistory serves the history requests from h; without it they are
// answered with ErrNoHistory. The server only reads h: closing it is the
// caller's, and Last works after Close.
func WithHistory(h *history.Log) Option {
	return func(s *Server) { s.history = h }
}

// WithMetrics serves the metrics requests from text (Prometheus' text
// format); without it they are answered with an error.
func WithMetrics(text func() ([]byte, error)) Option {
	return func(s *Server) { s.metrics = text }
}

// Server serves the control socket.
type Server struct {
	ln      *net.UnixListener
	path    string
	sup     Supervisor
	history *history.Log // nil: no history kept
	metrics func() ([]byte, error)
	log     zerolog.Logger
	slots   chan struct{}
	wg      sync.WaitGroup
	closed  chan struct{} // closed by Close: `stop --wait` clients learn the end

	mu       sync.Mutex
	keepFile bool // the socket file now belongs to a successor: do not remove it
}

// Listen creates the control socket at path, mode 0600. A stale socket file
// (nobody listening) is replaced; a live one is an error: another
// supervisor uses it.
func Listen(path string) (*net.UnixListener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s is in use: is another supervisor running? Give this one its own --control PATH", path)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("control socket %s: a file that is not a socket is in the way: remove it or choose another --control PATH", path)
		}
		os.Remove(path)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.SetUnlinkOnClose(false) // Close decides, below
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		os.Remove(path)
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

// NewServer serves requests on ln, which Listen made or a predecessor
// passed on, until Close.
func NewServer(ln *net.UnixListener, path string, sup Supervisor, log zerolog.Logger, opts ...Option) *Server {
	ln.SetUnlinkOnClose(false)
	s := &Server{ln: ln, path: path, sup: sup, log: log, slots: make(chan struct{}, MaxConns), closed: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	s.wg.Add(1)
	go s.serve()
	return s
}

// Listener is the server's socket, to pass on to a successor.
func (s *Server) Listener() *net.UnixListener { return s.ln }

// HandOver marks the socket file as the successor's: Close leaves it.
func (s *Server) HandOver() {
	s.mu.Lock()
	s.keepFile = true
	s.mu.Unlock()
}

// Close stops accepting and removes the socket file, unless it was handed
// over. A `stop --wait` connection learns the end; others being served (an
// upgrade --wait) end when their answer is written.
func (s *Server) Close() error {
	select {
	case <-s.closed:
	default:
		close(s.closed)
	}
	err := s.ln.Close()
	s.mu.Lock()
	keep := s.keepFile
	s.mu.Unlock()
	if !keep {
		os.Remove(s.path)
	}
	s.wg.Wait()
	return err
}

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of fds, say: back off rather than spin, and go on.
			s.log.Warn().Err(err).Msg("control socket: accept failed")
			time.Sleep(100 * time.Millisecond)
			continue
		}
		select {
		case s.slots <- struct{}{}:
			go func() {
				defer func() { <-s.slots }()
				s.handle(c)
			}()
		default:
			s.log.Warn().Msg("control socket: too many connections at once; one turned away")
			writeResponse(c, Response{Error: "busy: too many control connections at once; try again"})
			c.Close()
		}
	}
}

// handle serves one connection: check the peer, read one request, answer.
func (s *Server) handle(c *net.UnixConn) {
	defer c.Close()
	cred, err := peerCred(c)
	if err != nil {
		s.log.Warn().Err(err).Msg("control socket: cannot read the peer's credentials: refused")
		return
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Getuid() {
		s.log.Warn().Int("uid", int(cred.Uid)).Int("pid", int(cred.Pid)).
			Msg("control request refused: only root and the supervisor's own user may use the control socket")
		writeResponse(c, Response{Error: fmt.Sprintf("permission denied: uid %d is neither root nor the supervisor's user", cred.Uid)})
		return
	}
	req, err := readRequest(c)
	if err != nil {
		s.log.Warn().Err(err).Int("uid", int(cred.Uid)).Int("pid", int(cred.Pid)).Msg("control request refused")
		writeResponse(c, Response{Error: err.Error()})
		return
	}
	ev := s.log.Info().Str("cmd", req.Cmd).Bool("wait", req.Wait)
	if req.Cmd == CmdRollback {
		ev = ev.Int("to", req.To)
	}
	ev.Int("uid", int(cred.Uid)).Int("pid", int(cred.Pid)).Msg("control request")
	writeResponse(c, s.answer(req, c))
	if req.Cmd == CmdStop && req.Wait {
		// The connection stays open until the supervisor is done: its end
		// tells the client that every worker has drained.
		c.SetDeadline(time.Time{})
		<-s.closed
	}
}

func (s *Server) answer(req Request, c *net.UnixConn) Response {
	switch req.Cmd {
	case CmdStatus:
		st, ok := s.sup.Status()
		if !ok {
			return Response{Error: "the supervisor is shutting down"}
		}
		return Response{OK: true, Status: &st}
	case CmdStop:
		s.sup.Stop()
		return Response{OK: true, PID: os.Getpid()}
	case CmdUpgrade:
		return await(req, c, s.sup.UpgradeBy(history.TriggerCtl))
	case CmdRollback:
		if req.To < 0 {
			return Response{Error: fmt.Sprintf("rollback to generation %d: a generation is a positive number (ctl status lists the held ones)", req.To)}
		}
		return await(req, c, s.sup.Rollback(req.To))
	case CmdReload:
		return s.awaitReload(req, c, s.sup.Reload(history.TriggerCtl))
	case CmdHistory:
		return s.lastRecords(req.N)
	case CmdMetrics:
		if s.metrics == nil {
			return Response{Error: "this supervisor serves no metrics"}
		}
		b, err := s.metrics()
		if err != nil && len(b) == 0 {
			return Response{Error: "gathering the metrics: " + err.Error()}
		}
		return Response{OK: true, Metrics: string(b)}
	}
	return Response{Error: fmt.Sprintf("unknown command %q: use status, upgrade, rollback, reload, history, metrics or stop", req.Cmd)}
}

// await answers an upgrade or a rollback: at once without wait, else with
// its result, however long it takes.
func await(req Request, c *net.UnixConn, result <-chan supervisor.Result) Response {
	if !req.Wait {
		return Response{OK: true}
	}
	c.SetDeadline(time.Time{})
	r := <-result
	if r.Err != nil {
		return Response{Gen: r.Gen, Error: r.Err.Error(), Kind: string(supervisor.KindOf(r.Err))}
	}
	return Response{OK: true, Gen: r.Gen}
}

// awaitReload answers a reload: without wait, once the workers were
// signalled (a refusal, which comes at once, is still an error); else with
// its result.
func (s *Server) awaitReload(req Request, c *net.UnixConn, result <-chan supervisor.Result) Response {
	if !req.Wait {
		// The loop handles one request after the other: once it has
		// answered this status request, it has signalled the workers or
		// refused the reload.
		s.sup.Status()
		select {
		case r := <-result:
			return reloadResponse(r)
		default:
			return Response{OK: true}
		}
	}
	c.SetDeadline(time.Time{})
	return reloadResponse(<-result)
}

func reloadResponse(r supervisor.Result) Response {
	if r.Err != nil {
		return Response{Gen: r.Gen, Error: r.Err.Error(), Kind: string(supervisor.KindOf(r.Err))}
	}
	return Response{OK: true, Gen: r.Gen, Version: r.Version}
}

// lastRecords answers a history request: the last n records (0:
// DefaultHistory; below 0: every one), oldest first.
func (s *Server) lastRecords(n int) Response {
	if s.history == nil {
		return Response{Error: ErrNoHistory.Error()}
	}
	switch {
	case n == 0:
		n = DefaultHistory
	case n < 0:
		n = 0 // Last: every record
	}
	recs, skipped, err := s.history.Last(n)
	if err != nil {
		return Response{Error: fmt.Sprintf("reading the history in %s: %v", s.history.Dir(), err)}
	}
	return Response{OK: true, History: recs, Skipped: skipped}
}

// readRequest reads one bounded JSON request line within RequestTimeout.
// Only a line ended by its newline counts: half a line at the deadline is
// no request.
func readRequest(c *net.UnixConn) (Request, error) {
	c.SetReadDeadline(time.Now().Add(RequestTimeout))
	r := bufio.NewReaderSize(c, 512)
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(bytes.TrimSuffix(line, []byte("\n"))) > MaxRequest {
			return Request{}, fmt.Errorf("request longer than %d bytes", MaxRequest)
		}
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return Request{}, fmt.Errorf("no complete request within %v", RequestTimeout)
		}
		return Request{}, fmt.Errorf("reading the request: %w (a request is one JSON line, ended by a newline)", err)
	}
	var req Request
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return Request{}, fmt.Errorf("malformed request (want one JSON line such as {\"cmd\":\"status\"}): %v", err)
	}
	return req, nil
}

func writeResponse(c net.Conn, r Response) {
	b, _ := json.Marshal(r)
	c.SetWriteDeadline(time.Now().Add(RequestTimeout))
	c.Write(append(b, '\n'))
}

func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, credErr
}
