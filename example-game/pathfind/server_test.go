package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const testMap = `
.....#.
.#.#.#.
..#..#.
.#.#.#.
.....#.`

func testService(t testing.TB, c cells) *service {
	t.Helper()
	g := c.grid(t)
	s := NewSolver(g)
	check, err := newSelfCheck(g, s)
	if err != nil {
		t.Fatal(err)
	}
	return &service{grid: g, solver: s, check: check, version: "test-v", pid: 4242}
}

// pathAnswer is any answer from /path.
type pathAnswer struct {
	From  [2]int   `json:"from"`
	To    [2]int   `json:"to"`
	Path  [][2]int `json:"path"`
	Cost  *int     `json:"cost"`
	Error string   `json:"error"`
}

func (a pathAnswer) points() []Point {
	ps := make([]Point, len(a.Path))
	for i, p := range a.Path {
		ps[i] = Point{p[0], p[1]}
	}
	return ps
}

func TestHandler(t *testing.T) {
	c := mustParse(t, testMap)
	h := newHandler(testService(t, c))
	tests := []struct {
		method, url string
		status      int
		want        string // a substring of the error, or the cost of a path
	}{
		{"GET", "/path?from=0,0&to=4,0", 200, "40"},
		{"GET", "/path?from=0,0&to=0,0", 200, "0"},
		{"GET", "/path?to=4,4&from=0,0", 200, "80"},
		{"HEAD", "/path?from=0,0&to=4,0", 200, ""},
		{"GET", "/path?to=4,0", 400, "missing from: want from=X,Y"},
		{"GET", "/path?from=0,0", 400, "missing to: want to=X,Y"},
		{"GET", "/path?from=a,b&to=0,0", 400, `from="a,b": want X,Y: two integers`},
		{"GET", "/path?from=0,0&to=3", 400, `to="3": want X,Y`},
		{"GET", "/path?from=0,0&to=1,2,3", 400, `to="1,2,3": want X,Y`},
		{"GET", "/path?from=0,0&to=99999999999,0", 400, `want X,Y`},
		{"GET", "/path?from=0,0&to=7,0", 400, "to (7,0) is outside the map: x must be in 0..6 and y in 0..4"},
		{"GET", "/path?from=0,-1&to=0,0", 400, "from (0,-1) is outside the map"},
		{"GET", "/path?from=1,1&to=0,0", 400, "from (1,1) is a blocked cell"},
		{"GET", "/path?from=0,0&from=1,0&to=0,0", 400, "from given 2 times"},
		{"GET", "/path?from=0,0&to=6,0", 404, "no path from (0,0) to (6,0)"},
		{"POST", "/path?from=0,0&to=4,0", 405, "method POST not allowed"},
		{"DELETE", "/healthz", 405, "method DELETE not allowed"},
		{"GET", "/nope", 404, `no such endpoint "/nope"`},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.url, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.url, nil))
			res := rec.Result()
			checkHeaders(t, res, "4242", "test-v")
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d; body %s", res.StatusCode, tc.status, rec.Body)
			}
			if tc.status == 405 && res.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow: %q, want \"GET, HEAD\"", res.Header.Get("Allow"))
			}
			if tc.method == "HEAD" {
				return
			}
			var a pathAnswer
			if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
				t.Fatalf("body %q: %v", rec.Body, err)
			}
			if tc.status != 200 {
				if !strings.Contains(a.Error, tc.want) {
					t.Fatalf("error %q, want it to contain %q", a.Error, tc.want)
				}
				return
			}
			checkAnswer(t, c, tc.url, a, tc.want)
		})
	}
}

func checkHeaders(t *testing.T, res *http.Response, pid, version string) {
	t.Helper()
	if got := res.Header.Get(HeaderPid); got != pid {
		t.Errorf("%s: %q, want %q", HeaderPid, got, pid)
	}
	if got := res.Header.Get(HeaderVersion); got != version {
		t.Errorf("%s: %q, want %q", HeaderVersion, got, version)
	}
	if got := res.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type: %q, want application/json", got)
	}
}

// checkAnswer checks a 200 answer to url: ends, steps, and cost wantCost.
func checkAnswer(t *testing.T, c cells, url string, a pathAnswer, wantCost string) {
	t.Helper()
	var from, to Point
	q := httptest.NewRequest("GET", url, nil).URL.Query()
	fmt.Sscanf(q.Get("from"), "%d,%d", &from.X, &from.Y)
	fmt.Sscanf(q.Get("to"), "%d,%d", &to.X, &to.Y)
	if a.Cost == nil || fmt.Sprint(*a.Cost) != wantCost {
		t.Fatalf("cost %v, want %s", a.Cost, wantCost)
	}
	if a.From != [2]int{from.X, from.Y} || a.To != [2]int{to.X, to.Y} {
		t.Errorf("from %v to %v, want %v to %v", a.From, a.To, from, to)
	}
	if err := c.checkPath(from, to, a.points(), *a.Cost); err != nil {
		t.Error(err)
	}
}

func TestHealthz(t *testing.T) {
	h := newHandler(testService(t, mustParse(t, testMap)))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	checkHeaders(t, rec.Result(), "4242", "test-v")
	want := `{"status":"ok","version":"test-v","pid":4242}` + "\n"
	if rec.Code != 200 || rec.Body.String() != want {
		t.Fatalf("got %d %q, want 200 %q", rec.Code, rec.Body, want)
	}
}

// TestHandlerOverHTTP serves the default map on a loopback socket and checks
// a long path end to end, through a real client and keep-alive connection.
func TestHandlerOverHTTP(t *testing.T) {
	g := defaultMap(t)
	s := NewSolver(g)
	check, err := newSelfCheck(g, s)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(newHandler(&service{grid: g, solver: s, check: check, version: "v9", pid: 7}))
	defer srv.Close()
	a, b := farPair(t, g)
	_, wantCost, _ := s.Path(a, b)
	for range 3 {
		url := fmt.Sprintf("%s/path?from=%d,%d&to=%d,%d", srv.URL, a.X, a.Y, b.X, b.Y)
		res, err := srv.Client().Get(url)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		checkHeaders(t, res, "7", "v9")
		var ans pathAnswer
		if err := json.Unmarshal(body, &ans); err != nil || res.StatusCode != 200 {
			t.Fatalf("status %d, body %.200s: %v", res.StatusCode, body, err)
		}
		if ans.Cost == nil || *ans.Cost != wantCost || len(ans.Path) < 2 {
			t.Fatalf("cost %v with %d points, want %d", ans.Cost, len(ans.Path), wantCost)
		}
	}
}
