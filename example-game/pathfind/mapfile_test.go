package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// mustParse reads a map drawn in a test, independently of ParseMap: one
// row per line after the first newline, '#' blocked.
func mustParse(t testing.TB, text string) cells {
	t.Helper()
	var c cells
	for _, line := range strings.Split(strings.TrimPrefix(text, "\n"), "\n") {
		row := make([]bool, len(line))
		for x, ch := range line {
			row[x] = ch == '#'
		}
		c = append(c, row)
	}
	return c
}

func TestParseMap(t *testing.T) {
	text := "..#\r\n#..\n...\n\n\n"
	g, err := ParseMap(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if g.Width() != 3 || g.Height() != 3 || g.FreeCells() != 7 {
		t.Fatalf("got %dx%d with %d free cells, want 3x3 with 7", g.Width(), g.Height(), g.FreeCells())
	}
	want := mustParse(t, "..#\n#..\n...")
	for y := range 3 {
		for x := range 3 {
			if g.Free(Point{x, y}) != want.free(x, y) {
				t.Errorf("cell (%d,%d): free %v, want %v", x, y, g.Free(Point{x, y}), want.free(x, y))
			}
		}
	}
}

func TestParseMapErrors(t *testing.T) {
	tests := []struct {
		name, text, want string
	}{
		{"empty", "", "map is empty"},
		{"only newlines", "\n\n", "map is empty"},
		{"bad cell", "...\n.x.\n", "line 2, column 2: unexpected 'x'"},
		{"space", ". .\n", "line 1, column 2: unexpected ' '"},
		{"ragged", "...\n....\n", "line 2: row has 4 cells, want 3"},
		{"short", "...\n..\n", "line 2: row has 2 cells, want 3"},
		{"empty row inside", "...\n\n...\n", "line 2: empty row"},
		{"all blocked", "##\n##\n", "map has no free cell"},
		{"too wide", strings.Repeat(".", MaxSide+1) + "\n", "line 1: row longer than"},
		{"too many rows", strings.Repeat(".\n", MaxSide+1), "map too large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, err := ParseMap(strings.NewReader(tc.text))
			if err == nil {
				t.Fatalf("got a %dx%d map, want error %q", g.Width(), g.Height(), tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestLoadMap(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.map")
	bad := filepath.Join(dir, "bad.map")
	if err := os.WriteFile(good, []byte("....\n.##.\n....\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("....\n.#?.\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if g, err := LoadMap(good); err != nil || g.Width() != 4 || g.Height() != 3 {
		t.Fatalf("LoadMap(good): %v", err)
	}
	_, err := LoadMap(bad)
	if err == nil || !strings.Contains(err.Error(), bad+": line 2, column 3") {
		t.Errorf("LoadMap(bad): got %v, want the file, line and column named", err)
	}
	_, err = LoadMap(filepath.Join(dir, "missing.map"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadMap(missing): got %v, want os.ErrNotExist", err)
	}
}

func TestNewGridSize(t *testing.T) {
	none := func(x, y int) bool { return false }
	for _, size := range [][2]int{{0, 5}, {5, 0}, {-1, 3}, {MaxSide + 1, 1}, {MaxSide, MaxSide}} {
		if _, err := NewGrid(size[0], size[1], none); err == nil {
			t.Errorf("NewGrid(%d, %d): no error", size[0], size[1])
		}
	}
}

// TestDefaultMap checks the built-in map: big, the same every time, nearly
// all connected but with some unreachable vaults, and with paths that must
// go around things.
func TestDefaultMap(t *testing.T) {
	g := defaultMap(t)
	if g.Width() < 512 || g.Height() < 512 {
		t.Fatalf("default map is %dx%d, want at least 512x512", g.Width(), g.Height())
	}
	again, err := DefaultMap()
	if err != nil {
		t.Fatal(err)
	}
	for i := range g.free {
		if g.free[i] != again.free[i] {
			t.Fatalf("two default maps differ at cell %v", g.point(int32(i)))
		}
	}
	blocked := 1 - float64(g.FreeCells())/float64(g.Width()*g.Height())
	largest := float64(g.LargestComponent()) / float64(g.FreeCells())
	t.Logf("blocked %.1f%%; largest component %.1f%% of free cells", 100*blocked, 100*largest)
	if blocked < 0.1 || largest < 0.95 || largest == 1 {
		t.Errorf("blocked %.2f, want >= 0.1; largest component %.3f, want >= 0.95 and < 1 (vaults)", blocked, largest)
	}

	s := NewSolver(g)
	// The example in the package doc and README; it also pins the map.
	if _, cost, ok := s.Path(Point{100, 200}, Point{300, 400}); !ok || cost != 3156 {
		t.Errorf("(100,200) to (300,400): cost %d, ok %v; want 3156 as documented", cost, ok)
	}
	var connected, detours int
	for _, p := range samplePairs(g, 200, 11) {
		_, cost, ok := s.Path(p[0], p[1])
		if ok {
			connected++
			if int32(cost) > octile(p[0], p[1]) {
				detours++
			}
		}
	}
	t.Logf("%d of 200 random pairs connected, %d of them need a detour", connected, detours)
	if connected < 180 || detours < connected/2 {
		t.Errorf("%d of 200 pairs connected (want >= 180), %d with a detour (want >= half)", connected, detours)
	}
}
