//go:build !failpoint

package main

// failReexecPreflight, in a build with the failpoint tag, makes a new image
// fail its re-exec preflight, so that the tests see it execute the
// previous binary again.
const failReexecPreflight = false
