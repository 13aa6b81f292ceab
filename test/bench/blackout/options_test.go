package main

import (
	"slices"
	"testing"
)

func TestRows(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []size
		rnds int
	}{
		{[]string{"--rows", "100k/1k"}, []size{{100_000, 1000}}, 1},
		{[]string{"--rows", "100k/1k, 1M/10k", "--baseline", "HEAD"}, []size{{100_000, 1000}, {1_000_000, 10_000}}, 3},
		{[]string{"--players", "1k,2k", "--conns", "100", "--rounds", "2"}, []size{{1000, 100}, {2000, 100}}, 2},
		{[]string{"--hot-update"}, []size{{100_000, 1000}}, 1},
		{[]string{"--compare-live"}, []size{{1000, 1000}, {100_000, 1000}, {1_000_000, 1000}, {1_000_000, 10_000}}, 3},
		{[]string{"--compare-live", "--rows", "1k/100", "--rounds", "1", "--restart-min", "5ms"}, []size{{1000, 100}}, 1},
	} {
		o, err := parseFlags(tc.args)
		if err != nil || !slices.Equal(o.sizes, tc.want) || o.rounds != tc.rnds {
			t.Errorf("%q: sizes %v, rounds %d, %v; want %v, %d", tc.args, o.sizes, o.rounds, err, tc.want, tc.rnds)
		}
	}
	for _, bad := range [][]string{
		{"--rows", "100k"},
		{"--rows", "100k/"},
		{"--rows", "1k/1", "--players", "5"},
		{"--baseline-game-a", "a", "--baseline-game-b", "b"},
		{"--hot-update", "--baseline", "HEAD"},
		{"--compare-live", "--baseline", "HEAD"},
		{"--compare-live", "--restart-min", "0s"},
		{"--compare-live", "--crash-row", "1k"},
		{"--kills", "3"},
	} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
