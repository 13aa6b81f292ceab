// Package notify receives sd_notify messages from workers on a unix datagram
// socket, as systemd does on NOTIFY_SOCKET, and attaches to each the sender's
// credentials (SO_PASSCRED) so that the supervisor believes only its own
// workers. The wire format is systemd's: newline-separated KEY=VALUE
// assignments in one datagram (see sd_notify(3)).
package notify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// MaxMessage is the largest datagram read; systemd accepts the same.
const MaxMessage = 4096

// Message is one datagram with the kernel's word on who sent it.
type Message struct {
	PID  int
	UID  int
	Vars map[string]string // READY → "1", STATUS → "…", …
	FDs  []int             // fds passed with SCM_RIGHTS; the receiver owns them
}

// Has reports whether the message sets key to value, such as Has("READY", "1").
func (m Message) Has(key, value string) bool {
	v, ok := m.Vars[key]
	return ok && v == value
}

// Socket is a bound notify socket.
type Socket struct {
	conn *net.UnixConn
	path string
}

// Listen binds a datagram socket at path, readable and writable only by its
// owner, and turns on SO_PASSCRED.
func Listen(path string) (*Socket, error) {
	os.Remove(path) // a stale socket from a previous run: the directory is ours
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		conn.Close()
		return nil, fmt.Errorf("notify: %w", err)
	}
	rc, err := conn.SyscallConn()
	if err == nil {
		ctlErr := rc.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
		})
		if ctlErr != nil {
			err = ctlErr
		}
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("notify: SO_PASSCRED: %w", err)
	}
	return &Socket{conn: conn, path: path}, nil
}

// FD is the socket's file descriptor, for a re-exec in place (FromFD).
func (s *Socket) FD() int {
	fd := -1
	if rc, err := s.conn.SyscallConn(); err == nil {
		rc.Control(func(f uintptr) { fd = int(f) })
	}
	return fd
}

// FromFD is the socket bound at path that a previous image of this process
// kept open as fd across its exec (FD). The fd is taken over: closed here,
// its duplicate kept.
func FromFD(fd int, path string) (*Socket, error) {
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("notify: fd %d is a %T, not a unix socket", fd, c)
	}
	return &Socket{conn: uc, path: path}, nil
}

// Path is the value for NOTIFY_SOCKET.
func (s *Socket) Path() string { return s.path }

// Close closes the socket and removes its file. A Read in progress returns
// net.ErrClosed.
func (s *Socket) Close() error {
	err := s.conn.Close()
	os.Remove(s.path)
	return err
}

// SendTimeout bounds Send: the datagram goes to a socket of our own whose
// queue the loop drains, so it fires only if the loop is stuck.
const SendTimeout = 5 * time.Second

// Send sends a datagram to the socket from this process: a marker that the
// reader sees after every datagram queued before it, since the kernel keeps
// a socket's queue in order.
func (s *Socket) Send(msg string) error {
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: s.path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(SendTimeout))
	if _, err := c.Write([]byte(msg)); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	return nil
}

// ErrNoCredentials is returned for a datagram without SCM_CREDENTIALS, which
// the kernel attaches to every datagram once SO_PASSCRED is on.
var ErrNoCredentials = errors.New("notify: datagram without sender credentials")

// ErrTooLong is returned for a datagram longer than MaxMessage, or with
// more fds than fit; it is dropped whole.
var ErrTooLong = fmt.Errorf("notify: message longer than %d bytes or with too many fds: ignored", MaxMessage)

// Read waits for the next datagram. A malformed one is returned as an error
// and the socket stays usable; fds that came with it are closed.
func (s *Socket) Read() (Message, error) {
	buf := make([]byte, MaxMessage)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(4*253))
	rc, err := s.conn.SyscallConn()
	if err != nil {
		return Message{}, err
	}
	var n, oobn, flags int
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, oobn, flags, rerr = recvmsg(int(fd), buf, oob)
		return rerr != unix.EAGAIN && rerr != unix.EINTR
	}); err != nil {
		return Message{}, err
	}
	if rerr != nil {
		return Message{}, fmt.Errorf("notify: recvmsg: %w", rerr)
	}
	msg, err := parseControl(oob[:oobn])
	if err != nil {
		return Message{}, err
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		// systemd ignores such messages too: a cut-off value must not be believed.
		msg.CloseFDs()
		return Message{}, ErrTooLong
	}
	msg.Vars = ParseVars(string(buf[:n]))
	return msg, nil
}

func parseControl(oob []byte) (Message, error) {
	var msg Message
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return msg, fmt.Errorf("notify: control message: %w", err)
	}
	haveCred := false
	for _, c := range cmsgs {
		if c.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch c.Header.Type {
		case unix.SCM_CREDENTIALS:
			cred, err := unix.ParseUnixCredentials(&c)
			if err == nil {
				msg.PID, msg.UID, haveCred = int(cred.Pid), int(cred.Uid), true
			}
		case unix.SCM_RIGHTS:
			fds, err := unix.ParseUnixRights(&c)
			if err == nil {
				msg.FDs = append(msg.FDs, fds...)
			}
		}
	}
	if !haveCred {
		msg.CloseFDs()
		return Message{}, ErrNoCredentials
	}
	return msg, nil
}

// CloseFDs closes the fds that came with the message.
func (m Message) CloseFDs() {
	for _, fd := range m.FDs {
		unix.Close(fd)
	}
}

// ParseVars splits a datagram into its assignments. Lines without '=' are
// ignored, as systemd ignores them.
func ParseVars(s string) map[string]string {
	vars := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && k != "" {
			vars[k] = v
		}
	}
	return vars
}
