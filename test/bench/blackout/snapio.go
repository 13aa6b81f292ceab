package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/procswitch/supervisor/state"
	"golang.org/x/sys/unix"
)

// ioResult is the snapshot format's throughput through package state, with
// the game's player records.
type ioResult struct {
	records       int
	bytes         int64
	writeMS       []float64 // Create, Write each record, Commit (fsync, rename, fsync of the directory)
	readMS        []float64 // OpenLatest (which verifies the checksum first), Next to the end
	readColdMS    []float64 // the same after dropping the file from the page cache
	coldSupported bool
}

// measureIO writes and reads a snapshot of n player records, rounds times.
func measureIO(dir string, n, rounds int) (*ioResult, error) {
	res := &ioResult{records: n, coldSupported: true}
	path := filepath.Join(dir, "io-snap")
	defer os.Remove(path)
	defer os.Remove(path + state.PrevSuffix)
	for range rounds {
		os.Remove(path + state.PrevSuffix)
		t0 := time.Now()
		size, err := writeSeed(path, n)
		if err != nil {
			return nil, err
		}
		res.writeMS = append(res.writeMS, ms(time.Since(t0)))
		res.bytes = size
		if fi, err := os.Stat(path); err == nil {
			res.bytes = fi.Size()
		}
		d, err := readAll(path, n)
		if err != nil {
			return nil, err
		}
		res.readMS = append(res.readMS, d)
		if res.coldSupported && dropCache(path) == nil {
			d, err := readAll(path, n)
			if err != nil {
				return nil, err
			}
			res.readColdMS = append(res.readColdMS, d)
		} else {
			res.coldSupported = false
		}
	}
	return res, nil
}

func readAll(path string, want int) (float64, error) {
	t0 := time.Now()
	r, err := state.OpenLatest(path, state.MaxSchema(gameSchema))
	if err != nil {
		return 0, err
	}
	defer r.Close()
	n := 0
	for {
		rec, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
		if len(rec) > 0 && rec[0] == 'P' {
			n++
		}
	}
	d := ms(time.Since(t0))
	if n != want {
		return 0, fmt.Errorf("read %d player records back, wrote %d", n, want)
	}
	return d, nil
}

// dropCache asks the kernel to drop path's pages from the page cache, so
// that the next read comes from the disk. The file was fsynced, so its
// pages are clean and can go.
func dropCache(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}
