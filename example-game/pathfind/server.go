package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Response headers every answer carries, so a client can tell which worker
// generation served it.
const (
	HeaderPid     = "X-Worker-Pid"
	HeaderVersion = "X-Worker-Version"
)

// service answers /path and /healthz from one map.
type service struct {
	grid    *Grid
	solver  *Solver
	check   *selfCheck
	version string
	pid     int
}

// newHandler returns the HTTP API:
//
//	GET /path?from=X,Y&to=X,Y  200 {"from":[x,y],"to":[x,y],"path":[[x,y],...],"cost":N}
//	                           400 bad or blocked point, 404 no path
//	GET /healthz               200 {"status":"ok","version":"...","pid":N}
//
// Errors are {"error":"..."}; any other method gets 405, any other path 404.
func newHandler(svc *service) http.Handler {
	pid, ver := strconv.Itoa(svc.pid), svc.version
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(HeaderPid, pid)
		w.Header().Set(HeaderVersion, ver)
		var h func(http.ResponseWriter, *http.Request)
		switch r.URL.Path {
		case "/path":
			h = svc.path
		case "/healthz":
			h = svc.healthz
		default:
			writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint %q; try /path?from=X,Y&to=X,Y or /healthz", r.URL.Path))
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed; use GET", r.Method))
			return
		}
		h(w, r)
	})
}

func (svc *service) path(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	from, err := svc.point(q, "from")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	to, err := svc.point(q, "to")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	path, cost, ok := svc.solver.Path(from, to)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no path from %v to %v: they are in areas that walls keep apart", from, to))
		return
	}
	writeJSON(w, http.StatusOK, appendPathJSON(make([]byte, 0, 64+16*len(path)), from, to, path, cost))
}

// point reads the query parameter name as a free cell "X,Y".
func (svc *service) point(q url.Values, name string) (Point, error) {
	vals, g := q[name], svc.grid
	switch len(vals) {
	case 0:
		return Point{}, fmt.Errorf("missing %s: want %s=X,Y", name, name)
	case 1:
	default:
		return Point{}, fmt.Errorf("%s given %d times: want it once", name, len(vals))
	}
	p, err := parsePoint(vals[0])
	if err != nil {
		return Point{}, fmt.Errorf("%s=%q: %w", name, vals[0], err)
	}
	if !g.Contains(p) {
		return Point{}, fmt.Errorf("%s %v is outside the map: x must be in 0..%d and y in 0..%d",
			name, p, g.Width()-1, g.Height()-1)
	}
	if !g.Free(p) {
		return Point{}, fmt.Errorf("%s %v is a blocked cell: pick a free one", name, p)
	}
	return p, nil
}

// parsePoint parses "X,Y", two decimal integers.
func parsePoint(s string) (Point, error) {
	bad := errors.New("want X,Y: two integers separated by a comma, such as 100,200")
	xs, ys, ok := strings.Cut(s, ",")
	if !ok {
		return Point{}, bad
	}
	x, errX := strconv.ParseInt(xs, 10, 32)
	y, errY := strconv.ParseInt(ys, 10, 32)
	if errX != nil || errY != nil {
		return Point{}, bad
	}
	return Point{X: int(x), Y: int(y)}, nil
}

func (svc *service) healthz(w http.ResponseWriter, _ *http.Request) {
	if err := svc.check.run(); err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	body, _ := json.Marshal(struct {
		Status  string `json:"status"`
		Version string `json:"version"`
		Pid     int    `json:"pid"`
	}{"ok", svc.version, svc.pid})
	writeJSON(w, http.StatusOK, body)
}

// appendPathJSON encodes a /path answer by hand: a long path is thousands
// of small arrays, which encoding/json would build through reflection.
func appendPathJSON(b []byte, from, to Point, path []Point, cost int) []byte {
	b = append(b, `{"from":`...)
	b = appendPoint(b, from)
	b = append(b, `,"to":`...)
	b = appendPoint(b, to)
	b = append(b, `,"path":[`...)
	for i, p := range path {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendPoint(b, p)
	}
	b = append(b, `],"cost":`...)
	b = strconv.AppendInt(b, int64(cost), 10)
	return append(b, '}')
}

func appendPoint(b []byte, p Point) []byte {
	b = append(b, '[')
	b = strconv.AppendInt(b, int64(p.X), 10)
	b = append(b, ',')
	b = strconv.AppendInt(b, int64(p.Y), 10)
	return append(b, ']')
}

func writeError(w http.ResponseWriter, status int, msg string) {
	body, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}
