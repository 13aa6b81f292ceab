package main

import (
	"math"
	"sync"
)

// Step costs: 10 for a straight step, 14 for a diagonal one (10·√2 rounded).
const (
	CostStraight = 10
	CostDiagonal = 14
)

// Solver finds shortest paths on one Grid with A*. It is safe for
// concurrent use: each search borrows its working arrays from a pool, so a
// request allocates only the path it returns.
type Solver struct {
	grid *Grid
	dirs [8]direction
	pool sync.Pool
}

// direction is one of the eight moves, as offsets in the padded grid.
type direction struct {
	dx, dy int
	off    int32
	cost   int32
	side1  int32 // for a diagonal, the two orthogonal cells it passes
	side2  int32 // between, which must both be free; 0 for a straight step
}

// NewSolver returns a Solver for g.
func NewSolver(g *Grid) *Solver {
	s := &Solver{grid: g}
	pw := int32(g.pw)
	i := 0
	for dy := -1; dy <= 1; dy++ {
		for dx := -1; dx <= 1; dx++ {
			if dx == 0 && dy == 0 {
				continue
			}
			d := direction{dx: dx, dy: dy, off: int32(dy)*pw + int32(dx), cost: CostStraight}
			if dx != 0 && dy != 0 {
				d.cost, d.side1, d.side2 = CostDiagonal, int32(dx), int32(dy)*pw
			}
			s.dirs[i] = d
			i++
		}
	}
	s.pool.New = func() any { return newSearch(len(g.free)) }
	return s
}

// Path returns a cheapest path from a to b, both ends included, and its cost.
// ok is false when a or b is off the map or blocked, or when no path joins
// them. A path from a cell to itself is that one cell, at cost 0.
func (s *Solver) Path(a, b Point) (path []Point, cost int, ok bool) {
	g := s.grid
	if !g.Connected(a, b) {
		return nil, 0, false
	}
	if a == b {
		return []Point{a}, 0, true
	}
	st := s.pool.Get().(*search)
	defer s.pool.Put(st)
	st.reset()
	goal := g.index(b.X, b.Y)
	if !s.run(st, g.index(a.X, a.Y), goal, b) {
		return nil, 0, false // unreachable: the components said otherwise
	}
	return st.trace(g, goal), int(st.g[goal]), true
}

// run is A* from start to goal; it reports whether goal was reached. The
// octile heuristic is the exact cost on an empty map, so it never
// overestimates and is consistent: a cell is final when first taken off the
// heap, and the path found is optimal.
func (s *Solver) run(st *search, start, goal int32, b Point) bool {
	free, pw := s.grid.free, s.grid.pw
	st.open(start, 0, -1)
	h0 := octile(s.grid.point(start), b)
	st.heap.push(nodeOf(h0, h0, start))
	for len(st.heap) > 0 {
		cur := st.heap.pop().idx
		if st.state[cur] == st.stamp+1 {
			continue // a stale entry for a cell already closed
		}
		st.state[cur] = st.stamp + 1
		if cur == goal {
			return true
		}
		x, y, gc := int(cur)%pw-1, int(cur)/pw-1, st.g[cur]
		for i := range s.dirs {
			d := &s.dirs[i]
			n := cur + d.off
			if !free[n] || st.state[n] == st.stamp+1 {
				continue
			}
			if d.side1 != 0 && (!free[cur+d.side1] || !free[cur+d.side2]) {
				continue // no corner cutting
			}
			ng := gc + d.cost
			if st.state[n] == st.stamp && ng >= st.g[n] {
				continue
			}
			st.open(n, ng, cur)
			h := octile(Point{x + d.dx, y + d.dy}, b)
			st.heap.push(nodeOf(ng+h, h, n))
		}
	}
	return false
}

// octile is the cost from p to q on a map without obstacles.
func octile(p, q Point) int32 {
	dx, dy := abs(p.X-q.X), abs(p.Y-q.Y)
	return int32(CostStraight*max(dx, dy) + (CostDiagonal-CostStraight)*min(dx, dy))
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// search is the working memory of one search, reused across searches. A
// cell's entries are valid only if state[i] is stamp (open: g and parent
// set) or stamp+1 (closed); older values mean "not seen". Raising stamp by
// two forgets every cell at once, so nothing is cleared per search.
type search struct {
	stamp  uint32
	state  []uint32
	g      []int32
	parent []int32
	heap   nodeHeap
}

func newSearch(cells int) *search {
	return &search{
		state:  make([]uint32, cells),
		g:      make([]int32, cells),
		parent: make([]int32, cells),
	}
}

func (st *search) reset() {
	st.heap = st.heap[:0]
	if st.stamp >= math.MaxUint32-2 {
		clear(st.state)
		st.stamp = 0
	}
	st.stamp += 2
}

func (st *search) open(i, g, parent int32) {
	st.state[i], st.g[i], st.parent[i] = st.stamp, g, parent
}

// trace follows the parents back from goal and returns the path start first.
func (st *search) trace(g *Grid, goal int32) []Point {
	n := 0
	for i := goal; i >= 0; i = st.parent[i] {
		n++
	}
	path := make([]Point, n)
	for i := goal; i >= 0; i = st.parent[i] {
		n--
		path[n] = g.point(i)
	}
	return path
}

// node is a heap entry. key is f<<32 | h, with f = g + h: ordered by f,
// and among equal f the cell nearer the goal first. f and h are below 2^31
// (MaxCells bounds every cost), so keys are below 2^63.
type node struct {
	key uint64
	idx int32
}

func nodeOf(f, h, idx int32) node { return node{uint64(f)<<32 | uint64(h), idx} }

// nodeHeap is a binary min-heap of nodes, ordered by key.
type nodeHeap []node

func (hp *nodeHeap) push(n node) {
	h := append(*hp, n)
	i := len(h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if h[p].key <= n.key {
			break
		}
		h[i] = h[p]
		i = p
	}
	h[i] = n
	*hp = h
}

// pop removes the least node. It moves the hole at the root down to a leaf
// along the lesser children, then fills it with the last node and lets that
// rise: fewer comparisons than a plain sift-down, since the last node
// usually belongs near the bottom.
func (hp *nodeHeap) pop() node {
	h := *hp
	top := h[0]
	last := len(h) - 1
	n := h[last]
	h = h[:last]
	i := 0
	for {
		c := 2*i + 1
		if c >= last {
			break
		}
		if c+1 < last {
			// +1 if the right child is less: the difference of two keys
			// below 2^63 has its top bit set exactly then. No branch to
			// mispredict, and this loop is most of a search's time.
			c += int((h[c+1].key - h[c].key) >> 63)
		}
		h[i] = h[c]
		i = c
	}
	for i > 0 {
		p := (i - 1) / 2
		if h[p].key <= n.key {
			break
		}
		h[i] = h[p]
		i = p
	}
	if last > 0 {
		h[i] = n
	}
	*hp = h
	return top
}
