package handoff

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// drainWatch turns the drain signal into a closed channel: the first one,
// and after a rearm the next one.
type drainWatch struct {
	sigs     chan os.Signal
	done     chan struct{} // closed by stop
	stopOnce sync.Once

	mu       sync.Mutex
	draining chan struct{} // closed on the first signal since the last rearm
	closed   bool
}

// watchDrain catches sig, SIGTERM and SIGINT. Once one arrives, the signals
// stay caught (another one does nothing) until stop: a worker that is
// draining must not die of a repeated signal and lose what is in flight; the
// supervisor ends a worker that overstays its drain timeout with SIGKILL.
func watchDrain(sig syscall.Signal) *drainWatch {
	d := &drainWatch{
		sigs:     make(chan os.Signal, 1),
		done:     make(chan struct{}),
		draining: make(chan struct{}),
	}
	signal.Notify(d.sigs, sig, syscall.SIGTERM, syscall.SIGINT)
	go d.loop()
	return d
}

func (d *drainWatch) loop() {
	for {
		select {
		case <-d.sigs:
			d.mu.Lock()
			if !d.closed {
				close(d.draining)
				d.closed = true
			}
			d.mu.Unlock()
		case <-d.done:
			return
		}
	}
}

func (d *drainWatch) channel() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.draining
}

// rearm makes a new channel for the next drain signal, once the last one
// has been closed: the worker serves on after a drain (its save failed).
func (d *drainWatch) rearm() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		d.draining, d.closed = make(chan struct{}), false
	}
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
// exit; ServeHTTP does this for an HTTP server. A worker that could not save
// in handover mode serves on (State.HandOver returned ErrSaveFailed, or it
// called handover.Failed): from then on Draining returns a new channel,
// closed by the next drain signal.
func (w *Worker) Draining() <-chan struct{} {
	if w.drain == nil { // a Worker not made by New
		return nil
	}
	return w.drain.channel()
}

// undrain is the part of handover.Failed that re-arms Draining.
func (w *Worker) undrain() {
	if w.drain != nil {
		w.drain.rearm()
	}
}
