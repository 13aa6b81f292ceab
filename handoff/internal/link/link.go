// Package link hands package handoff/handover the handover steps of a
// handoff.Worker, which handoff keeps out of its own API: handoff sets Steps
// when it is initialised, and handover calls it. (The worker's type cannot
// be named here: handoff imports this package.)
package link

// Steps returns the handover steps of w, a *handoff.Worker: a value with
// the methods that package handover's steps interface lists.
var Steps func(w any) any
