package main

import (
	"errors"
	"flag"
	"strconv"
	"time"
)

// durationValue and countValue are flag values whose errors say what a
// value should look like; the flag package's own say "parse error". (It
// formats a Set error with %v, so the error itself must carry the hint:
// errors.As cannot find it in what Parse returns.)
type (
	durationValue struct{ p *time.Duration }
	countValue    struct{ p *int }
)

// durationVar defines a duration flag, as flag.DurationVar does.
func durationVar(fs *flag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	fs.Var(durationValue{p}, name, usage)
}

// countVar defines a whole-number flag, as flag.IntVar does.
func countVar(fs *flag.FlagSet, p *int, name string, value int, usage string) {
	*p = value
	fs.Var(countValue{p}, name, usage)
}

func (v durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("durations look like 30s or 500ms")
	}
	*v.p = d
	return nil
}

func (v durationValue) String() string {
	if v.p == nil { // the zero value, which PrintDefaults makes
		return time.Duration(0).String()
	}
	return v.p.String()
}

func (v countValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("counts are whole numbers, such as 4")
	}
	*v.p = n
	return nil
}

func (v countValue) String() string {
	if v.p == nil {
		return "0"
	}
	return strconv.Itoa(*v.p)
}
