package fdbatch

import (
	"fmt"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func pair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// TestSendParse: 600 fds go in three messages (253, 253, 94), each fd with
// its own name, and arrive as duplicates of what was sent.
func TestSendParse(t *testing.T) {
	a, b := pair(t)
	const n = 600
	names := make([]string, n)
	fds := make([]int, n)
	for i := range fds {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		names[i], fds[i] = fmt.Sprintf("c%d", i), fd
	}
	defer Close(fds)
	go func() {
		if err := Send(a, "FDS ", names, fds); err != nil {
			t.Error(err)
		}
		a.Close()
	}()
	buf, oob := make([]byte, 64<<10), make([]byte, OOBSize())
	var got []string
	var sizes []int
	for {
		m, oobn, _, _, err := b.ReadMsgUnix(buf, oob)
		if m == 0 && oobn == 0 {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ns, fs, err := Parse("FDS ", buf[:m], oob[:oobn])
		if err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		for _, fd := range fs {
			if err := unix.Fstat(fd, &st); err != nil {
				t.Fatalf("received fd %d: %v", fd, err)
			}
		}
		Close(fs)
		got, sizes = append(got, ns...), append(sizes, len(fs))
	}
	if fmt.Sprint(sizes) != "[253 253 94]" || len(got) != n || got[0] != "c0" || got[n-1] != "c599" {
		t.Fatalf("messages of %v fds, names %d (first %q)", sizes, len(got), got[:1])
	}
}

// TestParseRefuses: a message without the prefix, or with a name list that
// does not match its fds, is an error, and its fds are closed.
func TestParseRefuses(t *testing.T) {
	for _, text := range []string{"GO", "FDS x", "FDS x:y:z"} {
		a, b := pair(t)
		fd, _ := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if _, _, err := a.WriteMsgUnix([]byte(text), unix.UnixRights(fd, fd), nil); err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
		buf, oob := make([]byte, 64), make([]byte, OOBSize())
		m, oobn, _, _, err := b.ReadMsgUnix(buf, oob)
		if err != nil {
			t.Fatal(err)
		}
		received, _ := Rights(oob[:oobn]) // the numbers Parse gets too
		if _, _, err := Parse("FDS ", buf[:m], oob[:oobn]); err == nil {
			t.Errorf("%q with 2 fds: accepted", text)
		}
		for _, f := range received {
			if _, err := unix.FcntlInt(uintptr(f), unix.F_GETFD, 0); err == nil {
				t.Errorf("%q: fd %d left open", text, f)
			}
		}
	}
}
