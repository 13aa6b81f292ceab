//go:build failpoint

package main

// failReexecPreflight: see failpoint_off.go.
const failReexecPreflight = true
