// Package test holds the end-to-end tests: they build the supervisor and the
// pathfinding service, run them as real processes on loopback sockets, and
// upgrade, crash and stop them under load from package loadgen, whose clients
// never retry, and follow them through their logs and /proc with package
// procwatch.
//
// The test binary doubles as the misbehaving workers those tests need: run
// with PROCSWITCH_TEST_HELPER=NAME in its environment, TestMain runs the named
// helper instead of the tests.
//
//	go test ./test/            # a few minutes on two cores
//	go test -race ./test/      # also builds the supervisor with -race
package test
