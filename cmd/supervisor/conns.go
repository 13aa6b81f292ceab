package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cloudflare/tableflip"
	"github.com/procswitch/supervisor/internal/contract"
	"github.com/procswitch/supervisor/internal/fdbatch"
	"github.com/procswitch/supervisor/internal/supervisor"
	"golang.org/x/sys/unix"
)

// The stored connections of a self-upgrade in handover mode travel to the
// successor on their own seqpacket socket, passed as tableflip's "conns"
// file. The successor starts its first worker ahead and, once it has
// initialised, writes WAITING on the socket; only then does our worker save
// (supervisor.HandOver), so that a successor that hangs or dies while it
// starts costs no blackout. The connections then go out in the handover's
// own messages (package fdbatch: "FDS name:name:…" with the fds), then end
// of file; or, when the worker could not save and serves on, one message
// "ABORT reason". A socket of our own, rather than a tableflip file per
// connection, because tableflip keeps what it is given until an upgrade
// succeeds: after a failed one, its copies would hold the players'
// connections open.

// abortPrefix starts the message that says the worker could not save.
const abortPrefix = "ABORT "

// connChannel is our side of the channel.
type connChannel struct {
	send    *net.UnixConn // our end
	recvEnd *net.UnixConn // our copy of the successor's end, to drain on abort
	aborted atomic.Bool
	sent    chan error // the handover's outcome: nil also when none was asked for
}

// offerConns makes the channel, passes the successor's end to it, and
// serves the successor's request for the handover with handOver.
func offerConns(upg *tableflip.Upgrader, handOver supervisor.HandOver) (*connChannel, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	send, err := fileConn(fds[0], "conns-send")
	if err != nil {
		unix.Close(fds[1])
		return nil, err
	}
	recv, err := fileConn(fds[1], "conns")
	if err != nil {
		send.Close()
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
		return nil, err
	}
	ch := &connChannel{send: send, recvEnd: recv, sent: make(chan error, 1)}
	go func() { ch.sent <- ch.serve(handOver) }()
	return ch, nil
}

// serve waits for the successor's WAITING, has our worker save, and sends
// the connections (closing our duplicates, sent or not), or ABORT.
func (ch *connChannel) serve(handOver supervisor.HandOver) error {
	defer ch.send.Close()
	buf := make([]byte, 64)
	n, err := ch.send.Read(buf)
	if err != nil || ch.aborted.Load() || strings.TrimSpace(string(buf[:n])) != contract.HandoverWaiting {
		return nil // the successor never asked: our worker never stopped serving
	}
	conns, err := handOver()
	if err != nil {
		ch.send.Write([]byte(abortPrefix + strings.Join(strings.Fields(err.Error()), " ")))
		return err
	}
	var names, liveNames []string // the handover's batch; the live fd store's
	var connFDs, liveFDs []int
	for _, c := range conns {
		if c.Live {
			liveNames, liveFDs = append(liveNames, c.Name), append(liveFDs, c.FD)
		} else {
			names, connFDs = append(names, c.Name), append(connFDs, c.FD)
		}
	}
	err = fdbatch.Send(ch.send, contract.HandoverFDsKey, names, connFDs)
	if err == nil {
		err = fdbatch.Send(ch.send, liveFDsKey, liveNames, liveFDs)
	}
	fdbatch.Close(connFDs)
	fdbatch.Close(liveFDs)
	return err
}

// liveFDsKey prefixes the batches of the live fd store's fds, which a
// successor keeps in its own live store.
const liveFDsKey = "LIVE "

// close ends our side after a successful upgrade: the successor was ready,
// so it had every connection (or never asked, an older build).
func (ch *connChannel) close() error {
	if ch == nil {
		return nil
	}
	ch.send.SetReadDeadline(time.Now())
	err := <-ch.sent
	ch.recvEnd.Close()
	return err
}

// abort, after a failed upgrade, stops waiting for the successor and takes
// back and closes whatever the dead successor did not receive, so that no
// duplicate of a player's connection stays open in flight; our supervisor
// keeps its own copies.
func (ch *connChannel) abort() error {
	if ch == nil {
		return nil
	}
	ch.aborted.Store(true)
	ch.send.SetReadDeadline(time.Now())
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

// receiveConns is the successor's side of an eager channel (a predecessor
// that saved before it started us): every batch, to the end.
func receiveConns(upg *tableflip.Upgrader, timeout time.Duration) ([]supervisor.StoredConn, error) {
	uc, err := connsChannel(upg)
	if err != nil {
		return nil, err
	}
	defer uc.Close()
	uc.SetReadDeadline(time.Now().Add(timeout))
	return readConns(uc)
}

// connsChannel opens the "conns" file the predecessor passed.
func connsChannel(upg *tableflip.Upgrader) (*net.UnixConn, error) {
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
	return uc, nil
}

// predecessorChannel is the successor's side of a deferred channel: its
// HandOver asks, then receives.
type predecessorChannel struct {
	conn    *net.UnixConn
	timeout time.Duration // for the predecessor's worker to save and the connections to arrive
}

func (p *predecessorChannel) handOver() ([]supervisor.StoredConn, error) {
	defer p.conn.Close()
	p.conn.SetDeadline(time.Now().Add(p.timeout))
	if _, err := p.conn.Write([]byte(contract.HandoverWaiting)); err != nil {
		return nil, fmt.Errorf("asking for the handover: %w", err)
	}
	return readConns(p.conn)
}

// readConns reads batches to the end of file, or an ABORT.
func readConns(uc *net.UnixConn) ([]supervisor.StoredConn, error) {
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
		if reason, ok := strings.CutPrefix(string(buf[:n]), abortPrefix); err == nil && ok {
			err = errors.New("its worker could not save, and serves on: " + reason)
		}
		var names []string
		var fds []int
		prefix := contract.HandoverFDsKey
		if strings.HasPrefix(string(buf[:n]), liveFDsKey) {
			prefix = liveFDsKey
		}
		if err == nil {
			names, fds, err = fdbatch.Parse(prefix, buf[:n], oob[:oobn])
		}
		if err != nil {
			closeStored(conns)
			return nil, err
		}
		for i, fd := range fds {
			conns = append(conns, supervisor.StoredConn{Name: names[i], FD: fd, Live: prefix == liveFDsKey})
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
