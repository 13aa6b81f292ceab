package luapatch

import (
	"fmt"
	"math/rand/v2"
	"testing"

	lua "github.com/yuin/gopher-lua"
)

// BenchmarkPatch: go test -run '^$' -bench Patch ./luapatch/
// One op is one patch of a module of n functions (half through local
// helpers), alternating between two versions.
func BenchmarkPatch(b *testing.B) {
	for _, n := range []int{10, 90} {
		b.Run(fmt.Sprintf("functions=%d", n), func(b *testing.B) {
			g := genModule{n: n, sub: make([]bool, n), helper: make([]bool, n)}
			for i := range n {
				g.helper[i] = i%2 == 0
			}
			rng := rand.New(rand.NewPCG(1, 2))
			var srcs [2][]byte
			for v := range srcs {
				src, _ := g.source(rng, v+1, valid, -1)
				srcs[v] = []byte(src)
			}
			L := lua.NewState()
			defer L.Close()
			p := New(L, Options{})
			if _, err := p.LoadSource("mod", "mod.lua", srcs[0]); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				if _, err := p.PatchSource("mod", "mod.lua", srcs[i%2]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
