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
// time). Neither call blocks: fstat(2) reads the inode, and close(2) of a
// socket without SO_LINGER, or of a memfd, returns at once.

// isSocket says whether fd is a socket (a connection), or one fstat cannot
// tell; else it is state, such as a memfd.
func isSocket(fd int) bool {
	var stat unix.Stat_t
	_, _, errno := unix.RawSyscall(unix.SYS_FSTAT, uintptr(fd), uintptr(unsafe.Pointer(&stat)), 0)
	return errno != 0 || stat.Mode&unix.S_IFMT == unix.S_IFSOCK
}

// closeRaw closes fd, a stored fd being removed.
func closeRaw(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}
