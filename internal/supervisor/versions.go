package supervisor

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// The supervisor holds the binaries of the last Config.KeepVersions
// generations that served, one open file each, newest (the current one)
// first: a crash restart, a rollback on probation or `ctl rollback --to GEN`
// runs the very file that ran before, even after a new build was installed
// at the same path. A generation's binary is its own until the generation
// first serves; then the list owns it (release closes a file only when no
// entry holds it).

// held is one held binary.
type held struct {
	exe     *executable
	binary  string // the path it was started from; the file there may have changed since
	gens    []int  // the generations that ran it and served, oldest first
	version string // sha256, 12 hex digits, once hashed
	since   time.Time
	bad     string // why it was rolled back from: a crash restart never starts it again
}

func (h *held) gen() int { return h.gens[len(h.gens)-1] }

// hold puts g's binary at the head of the list once g serves, and closes
// the binaries that fall off its end.
func (s *Supervisor) hold(g *generation) {
	if g.exe == nil {
		return
	}
	// The same file started again (a SIGHUP without a new build) shares
	// its entry and its fd: holding it twice would cost an fd per upgrade
	// and push a genuinely older build off the list.
	i := slices.IndexFunc(s.held, func(h *held) bool { return h.exe.same(g.exe) })
	h := &held{exe: g.exe, binary: g.binary}
	if i >= 0 {
		h = s.held[i]
		s.held = slices.Delete(s.held, i, i+1)
		if h.exe != g.exe {
			g.exe.close()
			g.exe = h.exe
		}
	}
	h.gens = append(h.gens, g.n)
	h.since = time.Now()
	if g.version != "" {
		h.version = g.version
	} else if h.version != "" {
		g.version = h.version
	}
	s.held = slices.Insert(s.held, 0, h)
	for len(s.held) > s.cfg.KeepVersions {
		last := s.held[len(s.held)-1]
		s.held = s.held[:len(s.held)-1]
		last.exe.close()
	}
}

// release closes a generation's binary unless the list holds it.
func (s *Supervisor) release(exe *executable) {
	if exe == nil || slices.ContainsFunc(s.held, func(h *held) bool { return h.exe == exe }) {
		return
	}
	exe.close()
}

// heldOf is the entry that holds g's binary, or nil.
func (s *Supervisor) heldOf(g *generation) *held {
	if g == nil {
		return nil
	}
	for _, h := range s.held {
		if h.exe == g.exe {
			return h
		}
	}
	return nil
}

// previous is the newest held binary other than the current generation's
// that was never rolled back from, or nil.
func (s *Supervisor) previous() *held {
	cur := s.heldOf(s.current)
	for _, h := range s.held {
		if h != cur && h.bad == "" {
			return h
		}
	}
	return nil
}

// rollbackTarget finds the binary `ctl rollback --to gen` means (gen 0: the
// previous one), or says why there is none.
func (s *Supervisor) rollbackTarget(gen int) (*held, *UpgradeError) {
	if gen == 0 {
		if h := s.previous(); h != nil {
			return h, nil
		}
		return nil, refused("no earlier binary is held to roll back to (" + s.heldList() + ")")
	}
	for _, h := range s.held {
		if slices.Contains(h.gens, gen) {
			switch {
			case h == s.heldOf(s.current):
				return nil, refused(fmt.Sprintf("generation %d's binary is the one serving now", gen))
			case h.bad != "":
				return nil, refused(fmt.Sprintf("generation %d's binary was rolled back from (%s): pick another with --to", gen, h.bad))
			}
			return h, nil
		}
	}
	return nil, refused(fmt.Sprintf("generation %d's binary is not held (%s; --keep-versions keeps more)", gen, s.heldList()))
}

// heldList says which generations' binaries are held, for refusals.
func (s *Supervisor) heldList() string {
	if len(s.held) == 0 {
		return "none is held"
	}
	out := "held: generation"
	for i, h := range s.held {
		if i > 0 {
			out += ","
		}
		out += " " + strconv.Itoa(h.gen())
	}
	return out
}

// markBad marks g's binary as rolled back from.
func (s *Supervisor) markBad(g *generation, why string) {
	if h := s.heldOf(g); h != nil {
		h.bad = why
	}
}

// badAtPath says why the binary at path is refused: it is, unchanged, one
// that was rolled back from. A new build is a new file (or a changed one),
// and is tried.
func (s *Supervisor) badAtPath(path string) string {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return ""
	}
	for _, h := range s.held {
		e := h.exe.st
		if h.bad != "" && st.Dev == e.Dev && st.Ino == e.Ino && st.Size == e.Size && st.Mtim == e.Mtim {
			return fmt.Sprintf("the binary at %s is generation %d's, which was rolled back from (%s): install a fixed build first",
				path, h.gen(), h.bad)
		}
	}
	return ""
}

// versionsStatus lists the held binaries for Status.
func (s *Supervisor) versionsStatus() []VersionStatus {
	cur := s.heldOf(s.current)
	out := make([]VersionStatus, 0, len(s.held))
	for _, h := range s.held {
		out = append(out, VersionStatus{Gen: h.gen(), Binary: h.binary, Version: h.version,
			Current: h == cur, Bad: h.bad != "", Reason: h.bad, Since: h.since})
	}
	return out
}
