package handoff

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// drainWatch turns the first drain signal into a closed channel.
type drainWatch struct {
	sigs     chan os.Signal
	done     chan struct{} // closed by stop
	draining chan struct{} // closed on the first signal
	once     sync.Once
	stopOnce sync.Once
}

// watchDrain catches sig, SIGTERM and SIGINT. Once one arrives, the signals
// stay caught (a second one does nothing) until stop: a worker that is
// draining must not die of a repeated signal and lose what is in flight; the
// supervisor ends a worker that overstays its drain timeout with SIGKILL.
func watchDrain(sig syscall.Signal) *drainWatch {
	d := &drainWatch{
		sigs:     make(chan os.Signal, 1),
		done:     make(chan struct{}),
		draining: make(chan struct{}),
	}
	signal.Notify(d.sigs, sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		select {
		case <-d.sigs:
			d.once.Do(func() { close(d.draining) })
		case <-d.done:
		}
	}()
	return d
}

func (d *drainWatch) stop() {
	d.stopOnce.Do(func() {
		signal.Stop(d.sigs)
		close(d.done)
	})
}

// Draining returns a channel closed when the worker receives its drain
// signal: SUPERVISOR_DRAIN_SIGNAL (SIGTERM when unset), SIGTERM or SIGINT.
// The worker should then close its listeners, finish what is in flight and
// exit; ServeHTTP does this for an HTTP server.
func (w *Worker) Draining() <-chan struct{} {
	if w.drain == nil { // a Worker not made by New
		return nil
	}
	return w.drain.draining
}
