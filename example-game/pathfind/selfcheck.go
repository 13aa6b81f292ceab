package main

import "fmt"

// selfCheckCells bounds the self-check's query: its goal is the last of the
// first selfCheckCells cells reached from its start, so it stays small.
const selfCheckCells = 256

// selfCheck is a fixed path query whose answer is known, run before each
// watchdog ping and by /healthz to prove that the solver still answers.
type selfCheck struct {
	solver   *Solver
	from, to Point
	cost     int
}

// newSelfCheck picks the query on g, from the first free cell in reading
// order to a cell near it, and records the solver's answer.
func newSelfCheck(g *Grid, s *Solver) (*selfCheck, error) {
	c := &selfCheck{solver: s}
	for i, free := range g.free {
		if free {
			c.from = g.point(int32(i))
			break
		}
	}
	c.to = nearby(g, c.from)
	_, cost, ok := s.Path(c.from, c.to)
	if !ok {
		return nil, fmt.Errorf("self-check: no path from %v to %v", c.from, c.to)
	}
	c.cost = cost
	return c, nil
}

// run solves the query again and checks the answer.
func (c *selfCheck) run() error {
	path, cost, ok := c.solver.Path(c.from, c.to)
	switch {
	case !ok:
		return fmt.Errorf("self-check: no path from %v to %v, want cost %d", c.from, c.to, c.cost)
	case cost != c.cost:
		return fmt.Errorf("self-check: path from %v to %v costs %d, want %d", c.from, c.to, cost, c.cost)
	case len(path) == 0 || path[0] != c.from || path[len(path)-1] != c.to:
		return fmt.Errorf("self-check: path from %v to %v has the wrong ends", c.from, c.to)
	}
	return nil
}

// nearby returns the last of the first selfCheckCells free cells that a
// breadth-first walk in straight steps from p reaches.
func nearby(g *Grid, p Point) Point {
	start := g.index(p.X, p.Y)
	seen := map[int32]bool{start: true}
	queue := []int32{start}
	for head := 0; head < len(queue) && len(queue) < selfCheckCells; head++ {
		for _, off := range [4]int32{1, -1, int32(g.pw), -int32(g.pw)} {
			if n := queue[head] + off; g.free[n] && !seen[n] {
				seen[n] = true
				queue = append(queue, n)
			}
		}
	}
	return g.point(queue[len(queue)-1])
}
