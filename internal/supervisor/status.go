package supervisor

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/procswitch/supervisor/internal/history"
	"golang.org/x/sys/unix"
)

// Status is what the supervisor runs, as `supervisor ctl status` shows it
// and systemd's STATUS= line sums it up.
type Status struct {
	PID             int            `json:"pid"`
	Mode            string         `json:"mode"`     // overlap or handover
	State           string         `json:"state"`    // the state machine's state (machine.go): serving, upgrading, …
	LastGen         int            `json:"last_gen"` // the highest generation number used, failed ones included
	Current         *GenStatus     `json:"current,omitempty"`
	Upgrading       *GenStatus     `json:"upgrading,omitempty"`
	Draining        []GenStatus    `json:"draining,omitempty"`
	LastUpgrade     *UpgradeStatus `json:"last_upgrade,omitempty"`
	LastSelfUpgrade *UpgradeStatus `json:"last_self_upgrade,omitempty"` // the last SIGUSR2; Gen is 0
	LastReload      *UpgradeStatus `json:"last_reload,omitempty"`       // the last reload in place; Gen is the generation reloaded
	Stopping        bool           `json:"stopping,omitempty"`
	// Versions are the binaries held open, newest first: the current
	// generation's and those `ctl rollback` can go back to.
	Versions []VersionStatus `json:"versions,omitempty"`
	// Probation is set while the current generation is on probation: a
	// crash or a hang rolls it back by itself until then.
	ProbationUntil *time.Time `json:"probation_until,omitempty"`
	// FDStore is how many fds the live fd store holds (fdstore.go), of at
	// most FDStoreMax.
	FDStore    int `json:"fd_store"`
	FDStoreMax int `json:"fd_store_max"`
	// Blackout is set in a handover while no worker serves: from the old
	// worker's save to the new one's READY=1.
	Blackout bool `json:"blackout,omitempty"`
}

// VersionStatus is one held binary.
type VersionStatus struct {
	Gen     int       `json:"gen"`               // the last generation that ran it
	Binary  string    `json:"binary"`            // the path it was started from (the file there may have changed since)
	Version string    `json:"version,omitempty"` // sha256, 12 hex digits
	Current bool      `json:"current,omitempty"`
	Bad     bool      `json:"bad,omitempty"`    // rolled back from: never started again by a crash restart
	Reason  string    `json:"reason,omitempty"` // why it is bad
	Since   time.Time `json:"since"`            // when it last became current
}

// GenStatus describes one generation.
type GenStatus struct {
	Gen     int            `json:"gen"`
	Phase   string         `json:"phase"`
	Binary  string         `json:"binary"`
	Version string         `json:"version,omitempty"` // sha256 of the binary, 12 hex digits
	ReadyMS float64        `json:"ready_ms,omitempty"`
	Started time.Time      `json:"started"` // when its first worker was started
	Workers []WorkerStatus `json:"workers"`
}

// WorkerStatus describes one worker process.
type WorkerStatus struct {
	PID      int    `json:"pid"`
	Ready    bool   `json:"ready"`
	Status   string `json:"status,omitempty"` // its last STATUS=
	Restarts int    `json:"restarts,omitempty"`
	// Version is its last VERSION=: what it runs beyond the binary (its
	// scripts, its configuration), as it said at start or after a reload.
	// The binary's own version is the generation's.
	Version   string `json:"version,omitempty"`
	Reloading bool   `json:"reloading,omitempty"` // a reload runs and it has not answered yet
	// Standby is the slot's standby (--standby, standby.go), if one runs
	Standby *StandbyStatus `json:"standby,omitempty"`
}

// StandbyStatus describes a slot's standby: Waiting once it has read the
// state ahead and waits to take over.
type StandbyStatus struct {
	PID     int  `json:"pid"`
	Waiting bool `json:"waiting"`
}

// UpgradeStatus is the result of the last finished upgrade.
type UpgradeStatus struct {
	Gen        int       `json:"gen"`
	OK         bool      `json:"ok"`
	Kind       string    `json:"kind,omitempty"`   // of the failure: a Kind
	Reason     string    `json:"reason,omitempty"` // the whole error, as the upgrade's result says it
	RolledBack bool      `json:"rolled_back,omitempty"`
	At         time.Time `json:"at"`
	ReadyMS    float64   `json:"ready_ms,omitempty"`
	Rollback   bool      `json:"rollback,omitempty"` // to a held earlier binary (ctl rollback, probation)
	Version    string    `json:"version,omitempty"`  // of a reload: the workers' VERSION= (ReadyMS: signal to the last answer)
}

// Summary is the status in one line, for systemd's STATUS=.
func (st Status) Summary() string {
	line := ""
	if g := st.Current; g != nil {
		line = "generation " + strconv.Itoa(g.Gen) + " " + g.Phase + ": pid"
		if len(g.Workers) != 1 {
			line += "s"
		}
		for i, w := range g.Workers {
			if i > 0 {
				line += ","
			}
			line += " " + strconv.Itoa(w.PID)
		}
		if g.Version != "" {
			line += ", version " + g.Version
		}
	} else {
		line = "no generation serving"
	}
	if g := st.Upgrading; g != nil {
		line += "; upgrading to generation " + strconv.Itoa(g.Gen)
	}
	if u := st.LastUpgrade; u != nil {
		if u.OK {
			line += "; last upgrade: generation " + strconv.Itoa(u.Gen) + " ok"
		} else {
			line += "; last upgrade FAILED: " + u.Reason
		}
	}
	if st.State == stateReloading.String() {
		line += "; reloading"
	}
	if u := st.LastReload; u != nil && !u.OK {
		line += "; last reload FAILED: " + u.Reason
	}
	if st.Stopping {
		line += "; stopping"
	}
	return line
}

// Change is what an observer (Config.Observe) is told.
type Change int

const (
	FirstReady          Change = iota // the first generation is ready
	UpgradeStarted                    // a new generation is starting beside the current one
	UpgradeFinished                   // an upgrade ended; Status.LastUpgrade says how
	WorkersChanged                    // a worker crashed or was restarted
	Stopping                          // a stop began
	SelfUpgradeStarted                // SIGUSR2: a successor supervisor is being started
	SelfUpgradeFinished               // it ended; Status.LastSelfUpgrade says how
	ReloadStarted                     // the workers were sent the reload signal
	ReloadFinished                    // a reload ended; Status.LastReload says how
)

type statusRequest struct{ reply chan Status }

// versionEvent carries the hash of a generation's binary, computed off the loop.
type versionEvent struct {
	gen     *generation
	id      fileID
	version string
}

// fileID identifies a binary's content well enough not to hash it twice:
// a new build installed by rename is a new inode.
type fileID struct {
	dev, ino uint64
	size     int64
	mtime    unix.Timespec
}

// Status returns what the supervisor runs now; ok is false once Run has
// returned.
func (s *Supervisor) Status() (st Status, ok bool) {
	reply := make(chan Status, 1)
	if !s.send(statusRequest{reply: reply}) {
		return Status{}, false
	}
	return <-reply, true
}

// status builds the Status; it runs on the loop.
func (s *Supervisor) status() Status {
	st := Status{PID: os.Getpid(), Mode: "overlap", State: s.state.String(), LastGen: s.lastGen,
		LastUpgrade: s.lastUpgrade, LastSelfUpgrade: s.lastSelfUpgrade, LastReload: s.lastReload, Stopping: s.state == stateStopping,
		Versions: s.versionsStatus(), FDStore: s.live.n, FDStoreMax: s.live.max, Blackout: s.handover != nil}
	if p := s.probation; p != nil {
		until := p.until
		st.ProbationUntil = &until
	}
	if s.cfg.Handover {
		st.Mode = "handover"
	}
	for _, g := range s.gens {
		gs := g.status()
		switch {
		case g == s.current:
			st.Current = &gs
		case g == s.next:
			st.Upgrading = &gs
		case g.phase == draining && g.alive() > 0:
			st.Draining = append(st.Draining, gs)
		}
	}
	return st
}

func (g *generation) status() GenStatus {
	gs := GenStatus{Gen: g.n, Phase: g.phase.String(), Binary: g.binary, Version: g.version,
		ReadyMS: ms(g.readyTime), Started: g.started, Workers: []WorkerStatus{}}
	for _, sl := range g.slots {
		if w := sl.worker; w != nil {
			ws := WorkerStatus{PID: w.pid(), Ready: w.ready, Status: w.status, Restarts: sl.restarts,
				Version: w.version, Reloading: w.reloading}
			if sb := sl.standby; sb != nil && !sb.killed {
				ws.Standby = &StandbyStatus{PID: sb.pid(), Waiting: sb.standbyWaiting}
			}
			gs.Workers = append(gs.Workers, ws)
		}
	}
	return gs
}

// observe tells the observer, if any, about a change.
func (s *Supervisor) observe(c Change) {
	if s.cfg.Observe != nil {
		s.cfg.Observe(c, s.status())
	}
}

// recordUpgrade keeps the result of a finished upgrade or rollback of the
// workers for Status and the history.
func (s *Supervisor) recordUpgrade(g *generation, r Result) {
	u := &UpgradeStatus{Gen: r.Gen, OK: r.Err == nil, At: time.Now()}
	var ue *UpgradeError
	errors.As(r.Err, &ue)
	if r.Err == nil || ue != nil && ue.Kind == KindStateLost {
		u.ReadyMS = ms(g.readyTime)
	}
	if r.Err != nil {
		u.Reason, u.Kind = r.Err.Error(), string(KindOf(r.Err))
		u.RolledBack = ue != nil && ue.RolledBack
	}
	u.Rollback = g.rollback
	s.lastUpgrade = u
	rec := history.Record{Event: history.EventUpgrade, Trigger: g.trigger, Gen: g.n, FromGen: g.from,
		Binary: g.binary, Version: g.version, Result: historyResult(ue), Kind: u.Kind, ReadyMS: u.ReadyMS,
		BlackoutMS: ms(g.blackout)}
	if g.rollback {
		rec.Event = history.EventRollback
	}
	if ue != nil && ue.Kind == KindStateLost {
		rec.Lost = ue.Reason
	} else {
		rec.Reason = u.Reason
	}
	s.recordFor(g, rec)
}

// pendingRecord is a history record that waits for its generation's version.
type pendingRecord struct {
	gen *generation
	rec history.Record
}

// recordFor records rec once g's binary is hashed (hashBinary), with its
// version.
func (s *Supervisor) recordFor(g *generation, rec history.Record) {
	if s.cfg.Record == nil {
		return
	}
	rec.Time = time.Now()
	if !g.hashing {
		rec.Version = g.version
		s.record(rec)
		return
	}
	s.unhashed = append(s.unhashed, pendingRecord{gen: g, rec: rec})
}

// record hands one entry to the history, if one is kept, behind those that
// wait for a version.
func (s *Supervisor) record(rec history.Record) {
	if s.cfg.Record == nil {
		return
	}
	if rec.Time.IsZero() {
		rec.Time = time.Now()
	}
	if len(s.unhashed) > 0 {
		s.unhashed = append(s.unhashed, pendingRecord{rec: rec})
		return
	}
	s.write(rec)
}

func (s *Supervisor) write(rec history.Record) {
	if rec.Time.IsZero() {
		rec.Time = time.Now()
	}
	rec.PID = os.Getpid()
	s.cfg.Record(rec)
}

// onVersion: g's binary is hashed (version "" if it could not be read).
func (s *Supervisor) onVersion(g *generation, id fileID, version string) {
	if version != "" {
		g.version = version
		s.versions[id] = version
		if h := s.heldOf(g); h != nil {
			h.version = version
		}
		s.log.Info().Int("gen", g.n).Str("binary", g.binary).Str("version", version).Msg("generation version")
		if g == s.current {
			s.observe(WorkersChanged) // the STATUS= line gains the version
		}
	}
	g.hashing = false
	// Written in the order they were made, each once its version is known.
	n := 0
	for _, p := range s.unhashed {
		if p.gen != nil && p.gen.hashing {
			break
		}
		if p.gen != nil {
			p.rec.Version = p.gen.version
		}
		s.write(p.rec)
		n++
	}
	s.unhashed = slices.Delete(s.unhashed, 0, n)
}

// hashBinary computes g's version off the loop, from a duplicate of the
// held binary's fd (the loop may close its own meanwhile), once the
// generation is ready; a binary hashed before is not hashed again.
func (s *Supervisor) hashBinary(g *generation) {
	if g.exe == nil || g.version != "" {
		return
	}
	st := g.exe.st
	id := fileID{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim}
	if v, ok := s.versions[id]; ok {
		g.version = v
		return
	}
	fd, err := unix.FcntlInt(uintptr(g.exe.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return
	}
	g.hashing = true
	go func() {
		f := os.NewFile(uintptr(fd), g.binary)
		defer f.Close()
		h := sha256.New()
		version := ""
		if _, err := io.Copy(h, io.NewSectionReader(f, 0, 1<<40)); err == nil {
			version = hex.EncodeToString(h.Sum(nil))[:12]
		}
		s.send(versionEvent{gen: g, id: id, version: version})
	}()
}
