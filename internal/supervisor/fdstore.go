package supervisor

import (
	"fmt"
	"strings"
	"syscall"

	"github.com/procswitch/supervisor/internal/notify"
	"golang.org/x/sys/unix"
)

// The live fd store, systemd's fd store: a worker hands the supervisor
// file descriptors to keep for it (FDSTORE=1, FDNAME=…) at any time —
// each connection as it accepts it, the memfd that holds its state — and
// takes one back out when it is done with it (FDSTOREREMOVE=1, FDNAME=…).
// Every worker started afterwards, a crash restart, a rollback or the next
// generation, gets the whole store among LISTEN_FDS with the names (a
// worker started ahead of a handover gets it with GO): a crash is a pause
// for the players, not a disconnect, and an upgrade copies nothing.
//
// Stored fds whose peer hung up are dropped (systemd's FDPOLL semantics;
// FDPOLL=0 in the message exempts its fds, as systemd does) before each
// start. The store holds at most Config.FDStoreMax fds: beyond that a
// FDSTORE=1 is refused with a logged reason and its fds closed.
//
// It is distinct from the handover's batch (handover.go), the connections
// an old worker hands over after it was told to save, which the
// supervisor keeps only until the next generation serves on them: an
// FDSTORE=1 from a worker told to hand over goes to that batch, unless the
// worker used the live store before (then it stored its connections as it
// accepted them, and stores nothing at the handover but its last accepts).

// liveFD is one fd in the live store.
type liveFD struct {
	name   string
	fd     int
	id     uint64 // unique in the store's life: fd numbers are reused
	socket bool   // a connection; else state (a memfd), which a worker started ahead gets at once
	noPoll bool   // FDPOLL=0: not dropped when it reports a hang-up
}

// fdStore is the live store: fds in the order they were stored, with an
// index by name (several fds may share a name, as in systemd; a remove
// takes them all). A removed entry leaves a hole (fd -1) until the next
// compaction, so that a remove costs no more than a lookup.
type fdStore struct {
	entries []liveFD
	byName  map[string][]int // name → indices in entries
	n       int              // entries that hold an fd
	max     int
	lastID  uint64
}

func newFDStore(max int) *fdStore {
	return &fdStore{byName: map[string][]int{}, max: max}
}

// add stores fds under names (one each), or refuses them all, closed, when
// they would not fit.
func (st *fdStore) add(names []string, fds []int, noPoll bool) error {
	if st.n+len(fds) > st.max {
		closeAll(fds)
		return fmt.Errorf("the fd store holds %d of at most %d (--fd-store-max): %d fds (%s) refused and closed",
			st.n, st.max, len(fds), summarizeNames(names))
	}
	for i, fd := range fds {
		socket := isSocket(fd)
		st.lastID++
		st.byName[names[i]] = append(st.byName[names[i]], len(st.entries))
		st.entries = append(st.entries, liveFD{name: names[i], fd: fd, id: st.lastID, socket: socket, noPoll: noPoll})
	}
	st.n += len(fds)
	return nil
}

// remove closes and forgets every fd stored under name; it returns how many.
func (st *fdStore) remove(name string) int {
	idx := st.byName[name]
	for _, i := range idx {
		closeRaw(st.entries[i].fd)
		st.entries[i] = liveFD{fd: -1}
	}
	delete(st.byName, name)
	st.n -= len(idx)
	st.compact()
	return len(idx)
}

// compact drops the holes once they are more than half the entries.
func (st *fdStore) compact() {
	if len(st.entries) < 64 || st.n*2 > len(st.entries) {
		return
	}
	kept := st.entries[:0]
	clear(st.byName)
	for _, e := range st.entries {
		if e.fd < 0 {
			continue
		}
		st.byName[e.name] = append(st.byName[e.name], len(kept))
		kept = append(kept, e)
	}
	clear(st.entries[len(kept):])
	st.entries = kept
}

// list returns the stored fds for which keep holds (all, for nil), in the
// order they were stored. The store keeps them: a worker is given
// duplicates (exec, SCM_RIGHTS).
func (st *fdStore) list(keep func(liveFD) bool) []liveFD {
	out := make([]liveFD, 0, st.n)
	for _, e := range st.entries {
		if e.fd >= 0 && (keep == nil || keep(e)) {
			out = append(out, e)
		}
	}
	return out
}

// holdsState says whether the store holds an fd that is not a socket: a
// worker's state (a memfd), not only its connections.
func (st *fdStore) holdsState() bool {
	for _, e := range st.entries {
		if e.fd >= 0 && !e.socket {
			return true
		}
	}
	return false
}

// dropHungUp closes the stored fds that report a hang-up or an error, found
// by one poll(2) over the store (FDPOLL=0 ones excepted), and returns their
// names.
func (st *fdStore) dropHungUp() (dropped []string, err error) {
	var fds, at []int
	for i, e := range st.entries {
		if e.fd >= 0 && !e.noPoll {
			fds, at = append(fds, e.fd), append(at, i)
		}
	}
	gone, err := hungUp(fds)
	if err != nil {
		return nil, err
	}
	for k := range fds {
		if !gone[k] {
			continue
		}
		e := &st.entries[at[k]]
		dropped = append(dropped, e.name)
		unix.Close(e.fd)
		idx := st.byName[e.name]
		for j, i := range idx {
			if i == at[k] {
				idx = append(idx[:j], idx[j+1:]...)
				break
			}
		}
		if len(idx) == 0 {
			delete(st.byName, e.name)
		} else {
			st.byName[e.name] = idx
		}
		*e = liveFD{fd: -1}
		st.n--
	}
	st.compact()
	return dropped, nil
}

// hungUp says, by one poll(2) over fds, which report a hang-up or an
// error: a peer that left, or an fd no longer valid.
func hungUp(fds []int) ([]bool, error) {
	if len(fds) == 0 {
		return nil, nil
	}
	pfds := make([]unix.PollFd, len(fds))
	for i, fd := range fds {
		pfds[i] = unix.PollFd{Fd: int32(fd), Events: unix.POLLRDHUP}
	}
	for {
		_, err := unix.Poll(pfds, 0)
		if err == nil {
			break
		}
		if err != unix.EINTR {
			return nil, err
		}
	}
	gone := make([]bool, len(fds))
	for i, p := range pfds {
		gone[i] = p.Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0
	}
	return gone, nil
}

// closeAll empties the store.
func (st *fdStore) closeAll() {
	for _, e := range st.entries {
		if e.fd >= 0 {
			unix.Close(e.fd)
		}
	}
	st.entries, st.n = nil, 0
	clear(st.byName)
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// summarizeNames is names for a log line: the first few, and how many more.
func summarizeNames(names []string) string {
	const show = 3
	if len(names) <= show {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:show], ", "), len(names)-show)
}

// fdNames splits a message's FDNAME for n fds: one name for all, as in
// systemd, or (the supervisor's extension) one per fd, colon-separated. ok
// is false for a list of the wrong length; empty names are the default.
func fdNames(fdname string, n int) (names []string, ok bool) {
	list := strings.Split(fdname, ":")
	ok = len(list) == 1 || len(list) == n
	if !ok {
		list = []string{defaultFDName}
	}
	names = make([]string, n)
	for i := range names {
		names[i] = list[min(i, len(list)-1)]
		if names[i] == "" {
			names[i] = defaultFDName
		}
	}
	return names, ok
}

// fdReserve is the fds kept out of the live store's bound for everything
// else the supervisor opens: sockets, notify sockets, held binaries, the
// handover's duplicates of a thousand connections.
const fdReserve = 4096

// raiseFDLimit raises this process's soft RLIMIT_NOFILE to its hard limit,
// so that the store and the workers, which inherit the limit, can hold
// that many fds (syscall.Setrlimit, so that os/exec no longer gives
// children the limit the process started with), and returns max lowered
// to fit in it.
func (s *Supervisor) raiseFDLimit(max int) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		s.log.Warn().Err(err).Msg("cannot read RLIMIT_NOFILE; the fd store's bound is left as configured")
		return max
	}
	if lim.Cur < lim.Max {
		raised := syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			s.log.Warn().Err(err).Uint64("soft", lim.Cur).Uint64("hard", lim.Max).Msg("cannot raise RLIMIT_NOFILE's soft limit to the hard limit")
		} else {
			lim.Cur = lim.Max
		}
	}
	nofile := int(min(lim.Cur, 1<<30))
	if room := nofile - min(fdReserve, nofile/4); max > room {
		ev := s.log.Warn()
		if max == DefaultFDStoreMax {
			ev = s.log.Info() // the default, fitted to this machine
		}
		ev.Int("fd_store_max", max).Int("nofile", nofile).Int("lowered_to", room).
			Msg("the fd store's bound is lowered to fit RLIMIT_NOFILE (raise LimitNOFILE= or ulimit -Hn for more)")
		max = room
	}
	return max
}

// onFDStore applies FDSTORE=1: to the handover's batch when the worker was
// told to hand over and never used the live store, to the live store
// otherwise.
func (s *Supervisor) onFDStore(w *worker, msg notify.Message) {
	if s.cfg.Handover && w.gen.phase == draining && !w.liveStore {
		s.storeFDs(w, msg.Vars["FDNAME"], msg.FDs)
		return
	}
	w.liveStore = true
	names, ok := fdNames(msg.Vars["FDNAME"], len(msg.FDs))
	if !ok {
		s.log.Warn().Int("pid", w.pid()).Int("fds", len(msg.FDs)).
			Msg("FDSTORE=1 with a list of FDNAMEs not one per fd: stored under the default name")
	}
	if err := s.live.add(names, msg.FDs, msg.Has("FDPOLL", "0")); err != nil {
		s.log.Error().Int("gen", w.gen.n).Int("pid", w.pid()).Err(err).Msg("fd store full")
		return
	}
	s.log.Debug().Int("pid", w.pid()).Str("names", summarizeNames(names)).Int("stored", s.live.n).Msg("fds stored in the live store")
}

// onFDStoreRemove applies FDSTOREREMOVE=1: the fds stored under the name
// are closed and forgotten.
func (s *Supervisor) onFDStoreRemove(w *worker, name string) {
	if name == "" {
		s.log.Warn().Int("pid", w.pid()).Msg("FDSTOREREMOVE=1 without FDNAME: nothing removed")
		return
	}
	n := s.live.remove(name)
	s.log.Debug().Int("pid", w.pid()).Str("name", name).Int("removed", n).Int("stored", s.live.n).Msg("fds removed from the store")
}

// liveForStart drops the stored fds whose peer hung up and returns the
// rest for which keep holds (all, for nil), to be given to a worker.
func (s *Supervisor) liveForStart(keep func(liveFD) bool) []stored {
	dropped, err := s.live.dropHungUp()
	if err != nil {
		s.log.Warn().Err(err).Msg("fd store: cannot check for peers that hung up; passing every stored fd")
	}
	if len(dropped) > 0 {
		s.log.Info().Int("dropped", len(dropped)).Str("names", summarizeNames(dropped)).Msg("fd store: dropped fds whose peer hung up")
	}
	var out []stored
	for _, e := range s.live.list(keep) {
		out = append(out, stored{name: e.name, fd: e.fd})
	}
	return out
}

// passAhead picks every stored fd for a worker started ahead of a
// handover, noting each one's id and name in prepassed: it prepares its
// state and its connections while the old worker still serves, and GO
// passes only what was stored since, and names what was removed since.
func passAhead(prepassed map[uint64]string) func(liveFD) bool {
	return func(e liveFD) bool {
		prepassed[e.id] = e.name
		return true
	}
}

// notIn picks the fds not passed before.
func notIn(prepassed map[uint64]string) func(liveFD) bool {
	return func(e liveFD) bool { _, ok := prepassed[e.id]; return !ok }
}

// goneSince names the fds passed before that the store no longer holds
// (removed, or dropped as hung up), whose name no fd still held and passed
// before has: the worker closes its copies of them.
func (st *fdStore) goneSince(prepassed map[uint64]string) []string {
	held := map[uint64]bool{}
	kept := map[string]bool{}
	for _, e := range st.entries {
		if name, ok := prepassed[e.id]; ok && e.fd >= 0 {
			held[e.id], kept[name] = true, true
		}
	}
	var gone []string
	seen := map[string]bool{}
	for id, name := range prepassed {
		if !held[id] && !kept[name] && !seen[name] {
			gone, seen[name] = append(gone, name), true
		}
	}
	return gone
}
