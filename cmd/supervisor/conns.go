package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/cloudflare/tableflip"
	"github.com/procswitch/supervisor/internal/contract"
	"github.com/procswitch/supervisor/internal/fdbatch"
	"github.com/procswitch/supervisor/internal/supervisor"
	"golang.org/x/sys/unix"
)

// The stored connections of a self-upgrade in handover mode travel to the
// successor on their own seqpacket socket, passed as tableflip's "conns"
// file, in the handover's own messages (package fdbatch: "FDS name:name:…"
// with the fds), then end of file. A socket of our own,
// rather than a tableflip file per connection, because tableflip keeps what
// it is given until an upgrade succeeds: after a failed one, its copies
// would hold the players' connections open.

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
	// The messages carry duplicates of the fds; ours are closed once sent.
	names := make([]string, len(conns))
	connFDs := make([]int, len(conns))
	for i, c := range conns {
		names[i], connFDs[i] = c.Name, c.FD
	}
	ch := &connChannel{recvEnd: recv, sent: make(chan error, 1)}
	go func() {
		defer send.Close()
		err := fdbatch.Send(send, contract.HandoverFDsKey, names, connFDs)
		fdbatch.Close(connFDs)
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
	oob := make([]byte, fdbatch.OOBSize())
	for {
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 && oobn == 0 {
			return
		}
		fds, _ := fdbatch.Rights(oob[:oobn])
		fdbatch.Close(fds)
	}
}

// receiveConns is the successor's side: every batch, to the end.
func receiveConns(upg *tableflip.Upgrader, timeout time.Duration) ([]supervisor.StoredConn, error) {
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
	uc.SetReadDeadline(time.Now().Add(timeout))
	var conns []supervisor.StoredConn
	buf := make([]byte, 64<<10)
	oob := make([]byte, fdbatch.OOBSize())
	for {
		n, oobn, flags, _, err := uc.ReadMsgUnix(buf, oob)
		if n == 0 && oobn == 0 && (err == nil || errors.Is(err, io.EOF)) {
			return conns, nil // end of file
		}
		if err == nil && flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
			err = errors.New("a truncated message")
		}
		var names []string
		var fds []int
		if err == nil {
			names, fds, err = fdbatch.Parse(contract.HandoverFDsKey, buf[:n], oob[:oobn])
		}
		if err != nil {
			closeStored(conns)
			return nil, err
		}
		for i, fd := range fds {
			conns = append(conns, supervisor.StoredConn{Name: names[i], FD: fd})
		}
	}
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
