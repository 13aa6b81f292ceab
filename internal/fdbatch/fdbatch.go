// Package fdbatch passes named file descriptors over a connected unix
// seqpacket socket, many to a message: the message's text is a prefix and
// the names, colon-separated; the fds ride with it as SCM_RIGHTS, at most
// Max to a message. The supervisor hands stored client connections to a new
// worker this way (a handover, with contract.HandoverFDsKey as the prefix),
// and to the supervisor that replaces it (a self-upgrade).
package fdbatch

import (
	"fmt"
	"net"
	"strings"

	"golang.org/x/sys/unix"
)

// Max is the most fds one message carries: the kernel's SCM_MAX_FD.
const Max = 253

// Send sends fds, named by names (one each; a name holds no ':'), in as
// many messages as it takes. The caller keeps its fds: the messages carry
// duplicates.
func Send(c *net.UnixConn, prefix string, names []string, fds []int) error {
	for len(fds) > 0 {
		n := min(len(fds), Max)
		msg := prefix + strings.Join(names[:n], ":")
		if _, _, err := c.WriteMsgUnix([]byte(msg), unix.UnixRights(fds[:n]...), nil); err != nil {
			return err
		}
		names, fds = names[n:], fds[n:]
	}
	return nil
}

// OOBSize is the control buffer a receiver needs for one message.
func OOBSize() int { return unix.CmsgSpace(4 * Max) }

// Parse splits a received message into its names and fds. A message
// without the prefix, or with a name list that does not match its fds, is
// an error; the fds are then closed.
func Parse(prefix string, msg, oob []byte) (names []string, fds []int, err error) {
	fds, err = Rights(oob)
	if err != nil {
		return nil, nil, err
	}
	text, ok := strings.CutPrefix(string(msg), prefix)
	if ok {
		names = strings.Split(text, ":")
	}
	if !ok || len(names) != len(fds) {
		Close(fds)
		return nil, nil, fmt.Errorf("fdbatch: a message of %d fds and %q: want %q and one name per fd", len(fds), msg, prefix)
	}
	return names, fds, nil
}

// Rights returns the fds of every SCM_RIGHTS message in oob.
func Rights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("fdbatch: control message: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		if got, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, got...)
		}
	}
	return fds, nil
}

// Close closes fds.
func Close(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
