package main

import (
	"context"
	"math/rand/v2"

	"github.com/procswitch/supervisor/test/loadgen"
)

// startLoad starts loadgen clients on addr, each request drawn from the
// query mix: client i draws with PCG(seed, i), so that a run repeats and the
// bare and supervised targets of a throughput round see the same sequence.
// It sets cfg's URL, Next and Timeout.
func startLoad(ctx context.Context, e *env, addr string, seed uint64, cfg loadgen.Config) (*loadgen.Run, error) {
	cfg.URL = "http://" + addr + "/"
	cfg.Next = queryMix(e.uris, seed, max(1, cfg.Clients))
	cfg.Timeout = e.opts.requestTimeout
	return loadgen.Start(ctx, cfg)
}

// queryMix is a loadgen.Config.Next for clients clients drawing from uris.
func queryMix(uris []string, seed uint64, clients int) func(client, seq int) string {
	rngs := make([]*rand.Rand, clients)
	for i := range rngs {
		rngs[i] = rand.New(rand.NewPCG(seed, uint64(i)))
	}
	return func(client, _ int) string { return uris[rngs[client].IntN(len(uris))] }
}
