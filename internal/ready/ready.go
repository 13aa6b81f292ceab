// Package ready decides when a worker is ready to serve: by its own READY=1
// (sd_notify), or, for programs that do not speak sd_notify, by a probe.
//
// A probe through the shared listening socket cannot tell the generations
// apart (the old one answers too, and the kernel completes TCP handshakes
// for nobody), so the "tcp" probe asks the kernel instead: a worker is
// accepting once it has each stream socket in an epoll set or is blocked in
// accept(2) on it.
package ready

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Mode is how readiness is decided.
type Mode int

const (
	Notify Mode = iota // the worker sends READY=1 on NOTIFY_SOCKET
	TCP                // the worker accepts on every stream socket
	HTTP               // GET URL answers 2xx
	Delay              // a fixed time after start
)

// Probe is a parsed --ready value.
type Probe struct {
	Mode  Mode
	URL   string        // for HTTP
	Delay time.Duration // for Delay
}

// pollInterval is how often the TCP and HTTP probes look again.
const pollInterval = 5 * time.Millisecond

// Parse reads `notify`, `tcp`, `http://HOST:PORT/PATH` or `delay:DURATION`.
// The http probe is plain HTTP/1.1: https is refused.
func Parse(s string) (Probe, error) {
	switch {
	case s == "notify":
		return Probe{Mode: Notify}, nil
	case s == "tcp":
		return Probe{Mode: TCP}, nil
	case strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://"):
		if _, err := parseHTTP(s); err != nil {
			return Probe{}, err
		}
		return Probe{Mode: HTTP, URL: s}, nil
	case strings.HasPrefix(s, "delay:"):
		d, err := time.ParseDuration(strings.TrimPrefix(s, "delay:"))
		if err != nil || d < 0 {
			return Probe{}, fmt.Errorf("ready: %q: want delay:DURATION, such as delay:500ms", s)
		}
		return Probe{Mode: Delay, Delay: d}, nil
	}
	return Probe{}, fmt.Errorf("ready: unknown probe %q: use notify, tcp, http://HOST:PORT/PATH or delay:DURATION", s)
}

func (p Probe) String() string {
	switch p.Mode {
	case TCP:
		return "tcp"
	case HTTP:
		return p.URL
	case Delay:
		return "delay:" + p.Delay.String()
	}
	return "notify"
}

// Target is the worker a probe watches.
type Target struct {
	PID     int
	Sockets []uint64 // inodes of the stream sockets it must accept on (TCP)
}

// Await blocks until t is ready by p, or ctx ends. For Notify it returns at
// once: readiness then arrives as a message, not from a probe.
func (p Probe) Await(ctx context.Context, t Target) error {
	switch p.Mode {
	case Delay:
		timer := time.NewTimer(p.Delay)
		defer timer.Stop()
		select {
		case <-timer.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	case TCP:
		return poll(ctx, func() bool { return Accepting(t.PID, t.Sockets) })
	case HTTP:
		t, err := parseHTTP(p.URL)
		if err != nil {
			return err
		}
		return poll(ctx, func() bool { return t.ok(ctx) })
	}
	return nil
}

func poll(ctx context.Context, ok func() bool) error {
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for !ok() {
		select {
		case <-ticker.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
