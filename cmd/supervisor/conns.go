package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/cloudflare/tableflip"
	"github.com/procswitch/supervisor/internal/supervisor"
	"golang.org/x/sys/unix"
)

// The stored connections of a self-upgrade in handover mode travel to the
// successor on their own seqpacket socket, passed as tableflip's "conns"
// file: a datagram per batch of at most connBatch fds, its text "C" and the
// connections' names, one per line; then end of file. A socket of our own,
// rather than a tableflip file per connection, because tableflip keeps what
// it is given until an upgrade succeeds: after a failed one, its copies
// would hold the players' connections open.

// connBatch stays under the kernel's SCM_MAX_FD (253).
const connBatch = 250

// connChannel is the sending side. Sending runs while the successor starts,
// since the socket queues only a few datagrams.
type connChannel struct {
	recvEnd *net.UnixConn // our copy of the successor's end, to drain on abort
	sent    chan error
}

// sendConns passes conns, and closes their fds, sent or not.
func sendConns(upg *tableflip.Upgrader, conns []supervisor.StoredConn) (*connChannel, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		closeStored(conns)
		return nil, err
	}
	send, err := fileConn(fds[0], "conns-send")
	if err != nil {
		unix.Close(fds[1])
		closeStored(conns)
		return nil, err
	}
	recv, err := fileConn(fds[1], "conns")
	if err != nil {
		send.Close()
		closeStored(conns)
		return nil, err
	}
	f, err := recv.File() // tableflip duplicates it again, through SyscallConn
	if err == nil {
		err = upg.AddFile("conns", f)
		f.Close()
	}
	if err != nil {
		send.Close()
		recv.Close()
		closeStored(conns)
		return nil, err
	}
	// Each batch's fds are duplicated into the message when it is sent;
	// ours are closed then.
	batches := make([][]supervisor.StoredConn, 0, len(conns)/connBatch+1)
	for len(conns) > 0 {
		n := min(len(conns), connBatch)
		batches = append(batches, conns[:n])
		conns = conns[n:]
	}
	ch := &connChannel{recvEnd: recv, sent: make(chan error, 1)}
	go func() {
		defer send.Close()
		var err error
		for i, b := range batches {
			if err == nil {
				names := make([]string, len(b))
				fds := make([]int, len(b))
				for j, c := range b {
					names[j], fds[j] = c.Name, c.FD
				}
				if _, _, err = send.WriteMsgUnix([]byte("C\n"+strings.Join(names, "\n")), unix.UnixRights(fds...), nil); err != nil {
					err = fmt.Errorf("batch %d: %w", i, err)
				}
			}
			closeStored(b)
		}
		ch.sent <- err
	}()
	return ch, nil
}

// close ends the sending side after a successful upgrade: the successor has
// every connection.
func (ch *connChannel) close() error {
	if ch == nil {
		return nil
	}
	err := <-ch.sent
	ch.recvEnd.Close()
	return err
}

// abort, after a failed upgrade, takes back and closes whatever the dead
// successor did not receive, so that no duplicate of a player's connection
// stays open in flight; the caller restarts its worker on its own copies.
func (ch *connChannel) abort() error {
	if ch == nil {
		return nil
	}
	for {
		select {
		case err := <-ch.sent:
			drainConns(ch.recvEnd, time.Now())
			ch.recvEnd.Close()
			return err
		default:
		}
		drainConns(ch.recvEnd, time.Now().Add(10*time.Millisecond))
	}
}

// drainConns reads and closes batches until the deadline or the end.
func drainConns(c *net.UnixConn, deadline time.Time) {
	c.SetReadDeadline(deadline)
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(connBatch*4))
	for {
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 && oobn == 0 {
			return
		}
		fds, _ := parseRights(oob[:oobn])
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
}

// receiveConns is the successor's side: every batch, to the end.
func receiveConns(upg *tableflip.Upgrader) ([]supervisor.StoredConn, error) {
	f, err := upg.File("conns")
	if err != nil || f == nil {
		return nil, fmt.Errorf("the previous supervisor passed no connections channel (%v)", err)
	}
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, errors.New("the connections channel is not a unix socket")
	}
	defer uc.Close()
	uc.SetReadDeadline(time.Now().Add(30 * time.Second))
	var conns []supervisor.StoredConn
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(connBatch*4))
	for {
		n, oobn, flags, _, err := uc.ReadMsgUnix(buf, oob)
		if n == 0 && oobn == 0 && (err == nil || errors.Is(err, io.EOF)) {
			return conns, nil // end of file
		}
		if err != nil {
			closeStored(conns)
			return nil, err
		}
		fds, err := parseRights(oob[:oobn])
		if err == nil && (flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 || n < 2 || string(buf[:2]) != "C\n") {
			err = errors.New("malformed batch")
		}
		names := strings.Split(string(buf[2:n]), "\n")
		if err == nil && len(names) != len(fds) {
			err = fmt.Errorf("a batch of %d fds with %d names", len(fds), len(names))
		}
		if err != nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
			closeStored(conns)
			return nil, err
		}
		for i, fd := range fds {
			conns = append(conns, supervisor.StoredConn{Name: names[i], FD: fd})
		}
	}
}

func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, m := range msgs {
		if f, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, f...)
		}
	}
	return fds, nil
}

func closeStored(conns []supervisor.StoredConn) {
	for _, c := range conns {
		unix.Close(c.FD)
	}
}

// fileConn wraps a socket fd (taking it over) as a *net.UnixConn.
func fileConn(fd int, name string) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	return c.(*net.UnixConn), nil
}
