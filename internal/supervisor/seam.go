package supervisor

import (
	"syscall"
	"time"

	"github.com/procswitch/supervisor/internal/proc"
	"golang.org/x/sys/unix"
)

// The seam between the state machine and the operating system's
// processes: the real one is package proc's Reaper; tests give fakes
// (Config.processes), so that every (state, event) pair runs in-process.

// processes starts workers and reaps what exits below the supervisor.
type processes interface {
	Start(c *proc.Command) (process, error)
	// HoldOrphans leaves alone every process the supervisor did not start
	// until release is called: a successor supervisor, which tableflip
	// waits for itself.
	HoldOrphans() (release func())
	// Freeze stops all reaping until release: across a re-exec in place
	// (reexec.go), what exits stays a zombie for the new image.
	Freeze() (release func())
	// Disposition says whether process pid catches or ignores sig (a
	// reload checks it before it signals: reload.go).
	Disposition(pid int, sig syscall.Signal) (disposition, error)
	Close()
}

// process is one started worker.
type process interface {
	PID() int
	StartTime() time.Time
	Done() <-chan struct{}   // closed once it has exited and been reaped
	Status() unix.WaitStatus // waits for Done
	Signal(sig syscall.Signal) error
	Kill() error // it and its process group; idempotent
	KillGroup()  // what is left of its group once it has exited
}

// osProcesses is the real seam.
type osProcesses struct{ r *proc.Reaper }

func (o osProcesses) Start(c *proc.Command) (process, error) {
	p, err := o.r.Start(c)
	if err != nil {
		return nil, err
	}
	return p, nil
}

func (o osProcesses) HoldOrphans() func() { return o.r.HoldOrphans() }
func (o osProcesses) Freeze() func()      { return o.r.Freeze() }
func (o osProcesses) Disposition(pid int, sig syscall.Signal) (disposition, error) {
	return readDisposition(pid, sig)
}
func (o osProcesses) Close() { o.r.Close() }
