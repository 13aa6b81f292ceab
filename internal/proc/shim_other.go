//go:build !cgo || !linux

package proc

// fastShim says whether this build has the fast path of shim_cgo.go: not
// without cgo, where RunShim does all the work.
const fastShim = false
