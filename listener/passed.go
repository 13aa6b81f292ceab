package listener

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Passed is a socket that the supervisor this one replaced (a self-upgrade,
// SIGUSR2) passed on, in its set's order.
type Passed struct {
	Name     string
	File     *os.File
	OwnsPath bool // the unix socket file is ours to remove at the end
}

// Inherit makes the set from the sockets a predecessor passed on, matched
// to specs as Open matches systemd's sockets: the same command line gives
// the same set, in the same order, with nothing re-bound. A spec that
// matches no passed socket (a --listen added in the new version) is bound.
func Inherit(specs []Spec, passed []Passed) (*Set, error) {
	inherited := make([]*inheritedFD, len(passed))
	owns := map[int]bool{}
	for i, p := range passed {
		fd, err := dupConn(p.File) // not Fd(): it would make the shared socket blocking
		p.File.Close()
		if err != nil {
			for _, in := range inherited[:i] {
				unix.Close(in.fd)
			}
			return nil, fmt.Errorf("listener: socket %s from the previous supervisor: %w", p.Name, err)
		}
		inherited[i] = &inheritedFD{fd: fd, name: p.Name}
		owns[fd] = p.OwnsPath
	}
	set, err := open(specs, inherited)
	if err != nil {
		return nil, err
	}
	for _, s := range set.Sockets {
		if s.Inherited {
			s.OwnsPath = owns[s.fd]
		}
	}
	return set, nil
}
