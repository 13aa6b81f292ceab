package state

import (
	"errors"
	"io"
	"slices"
)

// WriteFile writes a snapshot of records to path, as Create, Write and
// Commit do, for callers whose records fit in memory anyway.
func WriteFile(path string, h Header, records [][]byte) error {
	w, err := Create(path, h)
	if err != nil {
		return err
	}
	defer w.Abort()
	for _, rec := range records {
		if err := w.Write(rec); err != nil {
			return err
		}
	}
	return w.Commit()
}

// ReadFile reads the whole snapshot at path, as Open and Next do, for small
// snapshots. It does not confirm it.
func ReadFile(path string, opts ...Option) (Header, [][]byte, error) {
	r, err := Open(path, opts...)
	if err != nil {
		return Header{}, nil, err
	}
	defer r.Close()
	var records [][]byte
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return r.Header(), records, nil
		}
		if err != nil {
			return Header{}, nil, err
		}
		records = append(records, slices.Clone(rec))
	}
}
