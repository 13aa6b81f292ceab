package main

import (
	"fmt"
	"math/rand/v2"
	"net"
	"regexp"
	"strconv"
	"time"

	"github.com/procswitch/supervisor/test/loadgen"
	"github.com/procswitch/supervisor/test/procwatch"
)

// The query mix: a third of the pairs are at most shortReach cells apart on
// each axis, a third at most midReach, a third anywhere on the map.
const (
	shortReach = 24
	midReach   = 128
	maxTries   = 50 // candidate pairs tried per query wanted, at most
)

// mapSizeRE reads the map size from pathfind's start-up line: "serving the
// built-in 512x512 map on ...".
var mapSizeRE = regexp.MustCompile(`serving the .* (\d+)x(\d+) map on `)

// startBare starts pathfind on its own on a free loopback port and waits for
// its start-up line. It returns the process, its address and the map size.
func startBare(path string, bound time.Duration) (*procwatch.Proc, string, [2]int, error) {
	var lastErr error
	for range 3 { // the free port may be taken before pathfind binds it
		addr, err := freePort()
		if err != nil {
			return nil, "", [2]int{}, err
		}
		p, err := startProc("pathfind (bare)", path, "--listen", addr)
		if err != nil {
			return nil, "", [2]int{}, err
		}
		e, _, err := p.Find(0, bound, "start-up line", func(e procwatch.Entry) bool { return mapSizeRE.MatchString(e.Raw) })
		if err == nil {
			m := mapSizeRE.FindStringSubmatch(e.Raw)
			w, _ := strconv.Atoi(m[1])
			h, _ := strconv.Atoi(m[2])
			return p, addr, [2]int{w, h}, nil
		}
		lastErr = err
		if stopErr := p.Stop(bound); stopErr != nil {
			warnf("%v", stopErr)
		}
	}
	return nil, "", [2]int{}, fmt.Errorf("pathfind on its own would not start: %w", lastErr)
}

// freePort returns a loopback address with a port that was free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// makeQueries draws n /path queries from seed and keeps those that pathfind
// at addr answers with 200: both points free and joined by a path.
func makeQueries(addr string, size [2]int, n int, seed uint64, timeout time.Duration) ([]string, error) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	var uris []string
	rejected := 0
	for try := 0; len(uris) < n && try < n*maxTries; try++ {
		reach := [3]int{shortReach, midReach, 1 << 30}[try%3]
		fx, fy := rng.IntN(size[0]), rng.IntN(size[1])
		tx, ty := near(rng, fx, reach, size[0]), near(rng, fy, reach, size[1])
		uri := fmt.Sprintf("/path?from=%d,%d&to=%d,%d", fx, fy, tx, ty)
		rec, err := loadgen.Get("http://"+addr+uri, timeout)
		if err != nil {
			return nil, err
		}
		switch {
		case rec.Class == loadgen.OK:
			uris = append(uris, uri)
		case rec.Class == loadgen.BadStatus && (rec.Status == 400 || rec.Status == 404):
			rejected++ // a blocked point or no path: draw again
		default:
			return nil, fmt.Errorf("probing queries: GET %s: %v: %v", uri, rec.Class, rec.Err)
		}
	}
	if len(uris) < n {
		return nil, fmt.Errorf("probing queries: only %d of %d answered 200 (%d rejected)", len(uris), n, rejected)
	}
	return uris, nil
}

// near draws a coordinate within reach of x, inside [0, size).
func near(rng *rand.Rand, x, reach, size int) int {
	lo, hi := max(0, x-reach), min(size-1, x+reach)
	return lo + rng.IntN(hi-lo+1)
}
