package ready

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Accepting reports whether process pid accepts on every socket in inodes:
// each is registered in one of its epoll sets (Go, nginx, Node.js, libuv,
// asyncio, Java NIO), or one of its threads is blocked in accept(2) or
// accept4(2) on it. Programs that wait in poll(2) or select(2) are not seen.
func Accepting(pid int, inodes []uint64) bool {
	want := map[uint64]bool{}
	for _, ino := range inodes {
		want[ino] = true
	}
	if len(want) == 0 {
		return true
	}
	proc := "/proc/" + strconv.Itoa(pid)
	fds, err := os.ReadDir(proc + "/fd")
	if err != nil {
		return false
	}
	for _, fd := range fds {
		link, err := os.Readlink(proc + "/fd/" + fd.Name())
		if err == nil && link == "anon_inode:[eventpoll]" {
			for _, ino := range epollInodes(proc + "/fdinfo/" + fd.Name()) {
				delete(want, ino)
			}
		}
	}
	for _, ino := range acceptBlocked(proc) {
		delete(want, ino)
	}
	return len(want) == 0
}

// epollInodes reads the inodes an epoll fd watches from lines such as
// "tfd:        3 events:       19 data: 3  pos:0 ino:1a2b sdev:8".
func epollInodes(fdinfo string) []uint64 {
	f, err := os.Open(fdinfo)
	if err != nil {
		return nil
	}
	defer f.Close()
	var inodes []uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "tfd:") {
			continue
		}
		for _, field := range strings.Fields(line) {
			if hex, ok := strings.CutPrefix(field, "ino:"); ok {
				if ino, err := strconv.ParseUint(hex, 16, 64); err == nil {
					inodes = append(inodes, ino)
				}
			}
		}
	}
	return inodes
}

// acceptBlocked returns the inodes of the sockets the process's threads are
// blocked in accept on, from /proc/PID/task/TID/syscall ("43 0x3 …").
func acceptBlocked(proc string) []uint64 {
	tasks, _ := filepath.Glob(proc + "/task/*/syscall")
	var inodes []uint64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		fields := strings.Fields(string(b))
		if len(fields) < 2 {
			continue
		}
		nr, err := strconv.Atoi(fields[0])
		if err != nil || (nr != unix.SYS_ACCEPT4 && nr != sysAccept) {
			continue
		}
		fd, err := strconv.ParseInt(strings.TrimPrefix(fields[1], "0x"), 16, 64)
		if err != nil {
			continue
		}
		if ino, ok := socketInode(proc + "/fd/" + strconv.FormatInt(fd, 10)); ok {
			inodes = append(inodes, ino)
		}
	}
	return inodes
}

func socketInode(fdPath string) (uint64, bool) {
	link, err := os.Readlink(fdPath)
	if err != nil {
		return 0, false
	}
	s, ok := strings.CutPrefix(link, "socket:[")
	if !ok {
		return 0, false
	}
	ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64)
	return ino, err == nil
}
