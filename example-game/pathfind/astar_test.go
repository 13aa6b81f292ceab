package main

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

// cells is a test's own view of a map, blocked[y][x], independent of Grid.
type cells [][]bool

func (c cells) free(x, y int) bool {
	return y >= 0 && y < len(c) && x >= 0 && x < len(c[0]) && !c[y][x]
}

func (c cells) grid(t testing.TB) *Grid {
	t.Helper()
	g, err := NewGrid(len(c[0]), len(c), func(x, y int) bool { return c[y][x] })
	if err != nil {
		t.Fatalf("NewGrid: %v", err)
	}
	return g
}

// stepCost is the cost of one move from p to q under the documented rules,
// or -1 if the move is not allowed.
func (c cells) stepCost(p, q Point) int {
	dx, dy := q.X-p.X, q.Y-p.Y
	switch {
	case !c.free(p.X, p.Y) || !c.free(q.X, q.Y):
		return -1
	case dx < -1 || dx > 1 || dy < -1 || dy > 1 || (dx == 0 && dy == 0):
		return -1
	case dx == 0 || dy == 0:
		return 10
	case !c.free(p.X+dx, p.Y) || !c.free(p.X, p.Y+dy):
		return -1 // corner cut
	}
	return 14
}

// checkPath checks that path runs from a to b in allowed steps costing cost.
func (c cells) checkPath(a, b Point, path []Point, cost int) error {
	if len(path) == 0 || path[0] != a || path[len(path)-1] != b {
		return fmt.Errorf("path %v does not run from %v to %v", path, a, b)
	}
	sum := 0
	for i := 1; i < len(path); i++ {
		step := c.stepCost(path[i-1], path[i])
		if step < 0 {
			return fmt.Errorf("step %d, %v to %v, is not allowed", i, path[i-1], path[i])
		}
		sum += step
	}
	if sum != cost {
		return fmt.Errorf("steps cost %d, reported cost %d", sum, cost)
	}
	return nil
}

// dijkstra returns the cheapest cost from src to every cell (MaxInt if
// unreachable), by plain Dijkstra over every cell and every allowed move.
func (c cells) dijkstra(src Point) [][]int {
	dist := make([][]int, len(c))
	for y := range dist {
		dist[y] = make([]int, len(c[0]))
		for x := range dist[y] {
			dist[y][x] = math.MaxInt
		}
	}
	dist[src.Y][src.X] = 0
	q := &pq{{src, 0}}
	for q.Len() > 0 {
		it := heap.Pop(q).(item)
		if it.d > dist[it.p.Y][it.p.X] {
			continue
		}
		for dy := -1; dy <= 1; dy++ {
			for dx := -1; dx <= 1; dx++ {
				n := Point{it.p.X + dx, it.p.Y + dy}
				step := c.stepCost(it.p, n)
				if step >= 0 && it.d+step < dist[n.Y][n.X] {
					dist[n.Y][n.X] = it.d + step
					heap.Push(q, item{n, it.d + step})
				}
			}
		}
	}
	return dist
}

type item struct {
	p Point
	d int
}

type pq []item

func (q pq) Len() int           { return len(q) }
func (q pq) Less(i, j int) bool { return q[i].d < q[j].d }
func (q pq) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *pq) Push(x any)        { *q = append(*q, x.(item)) }
func (q *pq) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}

func randomCells(rng *rand.Rand, w, h int, density float64) cells {
	c := make(cells, h)
	for y := range c {
		c[y] = make([]bool, w)
		for x := range c[y] {
			c[y][x] = rng.Float64() < density
		}
	}
	return c
}

func randomFree(rng *rand.Rand, c cells) Point {
	for {
		p := Point{rng.IntN(len(c[0])), rng.IntN(len(c))}
		if c.free(p.X, p.Y) {
			return p
		}
	}
}

// TestAStarOptimal compares A* with exhaustive Dijkstra on many random maps,
// reachable and unreachable pairs alike.
func TestAStarOptimal(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var found, missing int
	for m := range 300 {
		w, h := 12+rng.IntN(19), 12+rng.IntN(19)
		c := randomCells(rng, w, h, 0.1+0.4*rng.Float64())
		c[0][0] = false // at least one free cell
		s := NewSolver(c.grid(t))
		for range 4 {
			a := randomFree(rng, c)
			dist := c.dijkstra(a)
			for range 8 {
				b := randomFree(rng, c)
				path, cost, ok := s.Path(a, b)
				want := dist[b.Y][b.X]
				if want == math.MaxInt {
					missing++
					if ok {
						t.Fatalf("map %d: %v to %v: got a path of cost %d, want none", m, a, b, cost)
					}
					continue
				}
				found++
				if !ok || cost != want {
					t.Fatalf("map %d (%dx%d): %v to %v: got cost %d (ok %v), want %d", m, w, h, a, b, cost, ok, want)
				}
				if err := c.checkPath(a, b, path, cost); err != nil {
					t.Fatalf("map %d: %v to %v: %v", m, a, b, err)
				}
			}
		}
	}
	t.Logf("%d pairs with a path, %d without", found, missing)
	if found < 1000 || missing < 200 {
		t.Errorf("the sample is lopsided: %d pairs with a path, %d without", found, missing)
	}
}

func TestAStarCases(t *testing.T) {
	rooms := mustParse(t, `
.....#.
.#.#.#.
..#..#.
.#.#.#.
.....#.`)
	pinch := mustParse(t, `
.#
#.`)
	tests := []struct {
		name     string
		c        cells
		from, to Point
		cost     int // -1: no path
	}{
		{"same cell", rooms, Point{0, 0}, Point{0, 0}, 0},
		{"straight", rooms, Point{0, 0}, Point{4, 0}, 40},
		{"corner rule forces a detour", rooms, Point{1, 2}, Point{2, 1}, 60},
		{"around the blocks", rooms, Point{0, 0}, Point{4, 4}, 80},
		{"walled off", rooms, Point{0, 0}, Point{6, 4}, -1},
		{"diagonal pinch", pinch, Point{0, 0}, Point{1, 1}, -1},
		{"blocked end", rooms, Point{0, 0}, Point{1, 1}, -1},
		{"off the map", rooms, Point{0, 0}, Point{7, 0}, -1},
		{"negative", rooms, Point{-1, 0}, Point{0, 0}, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path, cost, ok := NewSolver(tc.c.grid(t)).Path(tc.from, tc.to)
			if tc.cost < 0 {
				if ok {
					t.Fatalf("got path %v of cost %d, want none", path, cost)
				}
				return
			}
			if !ok || cost != tc.cost {
				t.Fatalf("got cost %d ok %v, want %d", cost, ok, tc.cost)
			}
			if err := tc.c.checkPath(tc.from, tc.to, path, cost); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestAStarConcurrent runs searches from many goroutines at once; with
// -race it checks that pooled search state is never shared.
func TestAStarConcurrent(t *testing.T) {
	g := defaultMap(t)
	s := NewSolver(g)
	pairs := samplePairs(g, 40, 7)
	want := make([]int, len(pairs))
	for i, p := range pairs {
		_, want[i], _ = s.Path(p[0], p[1])
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for k := range 4 {
		wg.Go(func() {
			for i := range pairs {
				j := (i + k*10) % len(pairs)
				if _, cost, _ := s.Path(pairs[j][0], pairs[j][1]); cost != want[j] {
					errs <- fmt.Errorf("pair %d: cost %d, want %d", j, cost, want[j])
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestNodeHeap pushes random keys, with repeats, and checks that they
// come out in order.
func TestNodeHeap(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	for n := range 200 {
		var h nodeHeap
		keys := make([]int, n)
		for i := range keys {
			f, hh := rng.Int32N(50), rng.Int32N(5)
			h.push(nodeOf(f, hh, int32(i)))
			keys[i] = int(f)<<32 | int(hh)
		}
		slices.Sort(keys)
		for i, want := range keys {
			if got := h.pop(); got.key != uint64(want) {
				t.Fatalf("%d keys: pop %d gave key %x, want %x", n, i, got.key, want)
			}
		}
		if len(h) != 0 {
			t.Fatalf("%d keys: %d left after popping all", n, len(h))
		}
	}
}

func BenchmarkAStar(b *testing.B) {
	g := defaultMap(b)
	s := NewSolver(g)
	pairs := samplePairs(g, 256, 3)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		p := pairs[i%len(pairs)]
		s.Path(p[0], p[1])
	}
}

// samplePairs returns n pairs of free cells of g, chosen at random from seed.
func samplePairs(g *Grid, n int, seed uint64) [][2]Point {
	rng := rand.New(rand.NewPCG(seed, seed))
	pick := func() Point {
		for {
			p := Point{rng.IntN(g.Width()), rng.IntN(g.Height())}
			if g.Free(p) {
				return p
			}
		}
	}
	pairs := make([][2]Point, n)
	for i := range pairs {
		pairs[i] = [2]Point{pick(), pick()}
	}
	return pairs
}

// farPair returns two connected cells of g at least half the map apart.
func farPair(t testing.TB, g *Grid) (Point, Point) {
	t.Helper()
	for _, p := range samplePairs(g, 1000, 5) {
		if g.Connected(p[0], p[1]) && int(octile(p[0], p[1])) > 5*(g.Width()+g.Height()) {
			return p[0], p[1]
		}
	}
	t.Fatal("no connected pair of cells half the map apart")
	return Point{}, Point{}
}

var (
	defaultOnce sync.Once
	defaultGrid *Grid
	defaultErr  error
)

// defaultMap generates the built-in map once for all tests.
func defaultMap(t testing.TB) *Grid {
	t.Helper()
	defaultOnce.Do(func() { defaultGrid, defaultErr = DefaultMap() })
	if defaultErr != nil {
		t.Fatalf("DefaultMap: %v", defaultErr)
	}
	return defaultGrid
}
