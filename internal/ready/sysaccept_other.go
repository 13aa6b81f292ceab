//go:build !amd64

package ready

import "golang.org/x/sys/unix"

const sysAccept = unix.SYS_ACCEPT4 // accept(2) is accept4(2) on newer architectures
