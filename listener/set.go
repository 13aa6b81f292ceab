// Package listener opens, names and inherits the sockets that the supervisor
// owns for its whole life and hands to every worker generation.
//
// A socket comes from one of two places: the supervisor binds it (a fresh
// `--listen` address), or systemd passed it by socket activation (LISTEN_FDS
// with LISTEN_PID equal to the supervisor's PID, named by LISTEN_FDNAMES).
// Either way the same socket, with its accept queue, serves every generation:
// nothing is ever re-bound, and there are no SO_REUSEPORT twins whose closing
// would drop the connections queued on them.
package listener

import (
	"errors"
	"fmt"
	"strings"
)

// Set is the ordered list of sockets a worker receives as fds 3, 4, ….
type Set struct {
	Sockets []*Socket
}

// Open binds the sockets specs ask for, taking each from systemd instead when
// systemd passed one with the same name or address. When specs is empty,
// every socket systemd passed is taken, with its name: a program written for
// socket activation then runs under the supervisor unchanged. Sockets systemd
// passed that no spec asks for are kept too, after the others.
func Open(specs []Spec) (*Set, error) {
	inherited, err := takeSystemdFDs()
	if err != nil {
		return nil, err
	}
	return open(specs, inherited)
}

func open(specs []Spec, inherited []*inheritedFD) (*Set, error) {
	set := &Set{}
	for _, spec := range specs {
		s, err := openOne(spec, inherited)
		if err != nil {
			set.Close()
			return nil, err
		}
		set.Sockets = append(set.Sockets, s)
	}
	for _, in := range inherited {
		if in.used {
			continue
		}
		s, err := adopt(in, nil)
		if err != nil {
			set.Close()
			return nil, err
		}
		set.Sockets = append(set.Sockets, s)
	}
	if len(set.Sockets) == 0 {
		return nil, errors.New("listener: no sockets: give --listen NETWORK://ADDRESS, or run under systemd socket activation")
	}
	if err := set.checkUnique(len(specs)); err != nil {
		set.Close()
		return nil, err
	}
	return set, nil
}

func openOne(spec Spec, inherited []*inheritedFD) (*Socket, error) {
	for _, in := range inherited {
		if !in.used && in.name == spec.Name {
			return adopt(in, &spec)
		}
	}
	for _, in := range inherited {
		if in.used {
			continue
		}
		network, addr, err := describe(in.fd)
		if err != nil {
			continue
		}
		probe := &Socket{Spec: Spec{Network: network, Address: addr.String()}}
		if sameAddress(probe, spec) {
			return adopt(in, &spec)
		}
	}
	return bind(spec)
}

// checkUnique refuses two sockets of the command line with one name. Sockets
// systemd passed may share one (a .socket unit's name, by default).
func (s *Set) checkUnique(fromFlags int) error {
	seen := map[string]bool{}
	for _, sock := range s.Sockets[:fromFlags] {
		if seen[sock.Name] {
			return fmt.Errorf("listener: two sockets are named %q: give each --listen its own NAME=", sock.Name)
		}
		seen[sock.Name] = true
	}
	return nil
}

// FDs returns the sockets' fds in order: entry i becomes the worker's fd 3+i.
func (s *Set) FDs() []int {
	fds := make([]int, len(s.Sockets))
	for i, sock := range s.Sockets {
		fds[i] = sock.fd
	}
	return fds
}

// Names returns the value of LISTEN_FDNAMES for the set.
func (s *Set) Names() string {
	names := make([]string, len(s.Sockets))
	for i, sock := range s.Sockets {
		names[i] = sock.Name
	}
	return strings.Join(names, ":")
}

// Close closes every socket. Unix socket files the supervisor created are
// removed, unless the set was handed on; those systemd passed are left to
// systemd.
func (s *Set) Close() error {
	var errs []error
	for _, sock := range s.Sockets {
		if err := sock.close(); err != nil {
			errs = append(errs, err)
		}
		if sock.IsUnix() && sock.OwnsPath && sock.Address[0] != '@' {
			removeIfSocket(sock.Address)
		}
	}
	return errors.Join(errs...)
}

// HandedOn marks the set as passed to a successor supervisor: its unix
// socket files are the successor's now, and Close leaves them.
func (s *Set) HandedOn() {
	for _, sock := range s.Sockets {
		sock.OwnsPath = false
	}
}
