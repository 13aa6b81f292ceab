package supervisor

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The live fd store's system calls on the path of every stored or removed
// connection, made raw: without the runtime's bookkeeping for a call that
// may block (entersyscall), which wakes the runtime's monitor thread when
// the process was idle, a thread switch that cost more than the store's
// own work (a worker stores each connection it accepts one message at a
// time). A raw call holds the supervisor's only processor (GOMAXPROCS 1)
// until it returns, so only calls that cannot block are made raw:
// getsockopt(2), and close(2) of anything but a socket set to linger.

// isSocket says whether fd is a socket (a connection), or one the kernel
// cannot tell about; else it is state, such as a memfd.
func isSocket(fd int) bool {
	var typ int32
	size := uint32(4)
	_, _, errno := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_TYPE,
		uintptr(unsafe.Pointer(&typ)), uintptr(unsafe.Pointer(&size)), 0)
	return errno != unix.ENOTSOCK
}

// closeRaw closes fd, a stored fd being removed. A socket with SO_LINGER
// set (with a timeout) makes close(2) wait for the peer to acknowledge
// what is unsent: that one is closed with an ordinary system call.
func closeRaw(fd int) {
	var l unix.Linger
	size := uint32(unsafe.Sizeof(l))
	_, _, errno := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_LINGER,
		uintptr(unsafe.Pointer(&l)), uintptr(unsafe.Pointer(&size)), 0)
	if errno == 0 && l.Onoff != 0 && l.Linger > 0 {
		unix.Close(fd)
		return
	}
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}
