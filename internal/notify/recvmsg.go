package notify

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// recvmsg is recvmsg(2) on the socket's non-blocking fd, made with a raw
// system call: without the runtime's bookkeeping for a call that may
// block (entersyscall), which wakes the runtime's monitor thread when the
// process was idle. A supervisor is idle between its workers' messages,
// and a worker that stores each connection it accepts sends one per
// accept: that wake-up, a thread switch on each side, cost as much as the
// rest of the message's handling together. The call never blocks: the fd
// is non-blocking (EAGAIN), and the caller waits in the runtime's poller.
// Received fds are close-on-exec, as net.UnixConn's are.
func recvmsg(fd int, p, oob []byte) (n, oobn, flags int, err error) {
	iov := unix.Iovec{Base: &p[0]}
	iov.SetLen(len(p))
	msg := unix.Msghdr{Iov: &iov, Control: &oob[0]}
	msg.SetIovlen(1)
	msg.SetControllen(len(oob))
	r, _, errno := unix.RawSyscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), unix.MSG_CMSG_CLOEXEC)
	if errno != 0 {
		return 0, 0, 0, errno
	}
	return int(r), int(msg.Controllen), int(msg.Flags), nil
}
