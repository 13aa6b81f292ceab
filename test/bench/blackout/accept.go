package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"
)

// The live fd store's own cost per accept (issue 11: "the accept cost with
// the live fd store is within 1.1x of the cost without it"): the game with
// --live, with --live --live-conns=false (the data in the region, every
// command marked and committed there, but no connection stored), and
// without --live (the snapshot file), each in sessions of its own,
// alternated, at the crash row's players; per session the dial-to-LOGIN
// time of new connections one at a time, and 64 at a time.

// acceptSide is one way of running the game, and what its sessions measured.
type acceptSide struct {
	name  string
	args  []string // the game's flags beyond --autosave 0
	seq   []float64
	burst []float64
	rate  []float64
	err   error // the first session that failed; the side measures no more
}

func measureAcceptSides(o options, b *build, dir string, interrupt <-chan struct{}) ([]*acceptSide, error) {
	if o.burst == 0 {
		return nil, nil
	}
	players := o.crashRow.players
	live := liveArgs(players)
	sides := []*acceptSide{
		{name: "live", args: live},
		{name: "live, no conns stored", args: append(append([]string{}, live...), "--live-conns=false")},
		{name: "file", args: nil},
	}
	for range o.rounds {
		for _, sd := range sides {
			select {
			case <-interrupt:
				return sides, errors.New("interrupted")
			default:
			}
			if sd.err == nil {
				sd.err = measureAcceptSide(o, b, dir, players, sd)
			}
		}
	}
	return sides, nil
}

func measureAcceptSide(o options, b *build, dir string, players int, sd *acceptSide) (err error) {
	sub, err := os.MkdirTemp(dir, "accept-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(sub)
	snap, worker := filepath.Join(sub, "snap"), filepath.Join(sub, "gameserver")
	if _, err := writeSeed(snap, players); err != nil {
		return fmt.Errorf("seeding: %w", err)
	}
	if err := copyFile(worker, b.Bins.gameA); err != nil {
		return err
	}
	s, err := startSupervisor(b.Bins.supervisor, worker, snap, o.wait, nil, append([]string{"--autosave", "0"}, sd.args...)...)
	if err != nil {
		return err
	}
	defer s.stop()
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\nthe supervisor's last lines:\n%s", err, s.tail(25))
		}
	}()
	l, err := s.findMsg("listening")
	if err != nil {
		return err
	}
	if _, err := s.findMsg("generation ready"); err != nil {
		return err
	}
	seq, _, err := acceptBurst(l.Str("addr"), o.burst/4, 1, players, o.wait)
	if err != nil {
		return err
	}
	us, rate, err := acceptBurst(l.Str("addr"), o.burst, burstAtOnce, players, o.wait)
	if err != nil {
		return err
	}
	sd.seq, sd.burst, sd.rate = append(sd.seq, seq), append(sd.burst, us), append(sd.rate, rate)
	return nil
}

// reportAcceptSides prints the sides and the store's own cost; it reports
// whether the target was missed.
func reportAcceptSides(sides []*acceptSide, players int) (missed bool) {
	if len(sides) == 0 {
		return false
	}
	fmt.Printf("\nAccept cost by itself, %d players: sessions of their own, alternated: new connections dialled and logged in,\n", players)
	fmt.Printf("one at a time, then %d at a time; per session the median of dial to LOGIN's reply (µs); medians over the sessions\n", burstAtOnce)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "game\tsessions\tone at a time µs\tburst µs\tburst conns/s\t")
	for _, sd := range sides {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t\n", sd.name, len(sd.seq), f1(sd.seq), f1(sd.burst), f0(sd.rate))
	}
	tw.Flush()
	for _, sd := range sides {
		if sd.err != nil {
			fmt.Printf("  %s stopped early: %s\n", sd.name, oneLine(sd.err.Error()))
		}
	}
	live, bare, file := sides[0], sides[1], sides[2]
	if len(live.seq) == 0 || len(bare.seq) == 0 || len(file.seq) == 0 {
		fmt.Println("  ---- the live fd store's cost per accept: not measured")
		return false
	}
	for _, c := range []struct {
		what string
		a, b []float64
	}{
		{"one at a time", live.seq, bare.seq},
		{fmt.Sprintf("in a burst, %d at a time", burstAtOnce), live.burst, bare.burst},
	} {
		r := median(c.a) / median(c.b)
		verdict := "PASS"
		if r > targetAcceptRatio {
			verdict, missed = "MISS", true
		}
		fmt.Printf("  %s the live fd store's cost per accept, %s: live / live without storing connections = %.0f / %.0f µs = %.2f (target <= %.1f)\n",
			verdict, c.what, median(c.a), median(c.b), r, targetAcceptRatio)
	}
	fmt.Printf("       the region's: live without storing / file = %.0f / %.0f µs one at a time (%.2f), %.0f / %.0f µs in a burst (%.2f)\n",
		median(bare.seq), median(file.seq), median(bare.seq)/median(file.seq), median(bare.burst), median(file.burst), median(bare.burst)/median(file.burst))
	return missed
}
