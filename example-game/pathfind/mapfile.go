package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// The map file format, one row of cells per line, top row first:
//
//	'.'  a free cell
//	'#'  a blocked cell
//
// Every row must have the same number of cells. Lines end in "\n" or
// "\r\n"; the last line's end is optional, and empty lines at the end of the
// file are ignored. Nothing else is allowed: no comments, no spaces.
const (
	cellFree    = '.'
	cellBlocked = '#'
)

// LoadMap reads a map file in the format above.
func LoadMap(path string) (*Grid, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("map: %w", err)
	}
	defer f.Close()
	g, err := ParseMap(f)
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", path, err)
	}
	return g, nil
}

// ParseMap reads a map in the file format above. Errors name the line and,
// for a bad cell, the column, both counted from 1.
func ParseMap(r io.Reader) (*Grid, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), MaxSide+2) // the cells plus "\r\n"
	var p mapParser
	line := 0
	for sc.Scan() {
		line++
		if err := p.add(line, bytes.TrimSuffix(sc.Bytes(), []byte("\r"))); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("line %d: row longer than %d cells", line+1, MaxSide)
		}
		return nil, fmt.Errorf("read: %w", err)
	}
	return p.grid()
}

// mapParser collects the rows of a map file.
type mapParser struct {
	cells []byte // row by row, width cells each
	width int
	rows  int
	blank int // the line number of the first of a run of empty lines
}

func (p *mapParser) add(line int, row []byte) error {
	if len(row) == 0 {
		if p.blank == 0 {
			p.blank = line
		}
		return nil
	}
	if p.blank != 0 {
		return fmt.Errorf("line %d: empty row (only the end of the file may have empty lines)", p.blank)
	}
	if err := checkRow(row, line, p.width); err != nil {
		return err
	}
	p.width = len(row)
	if p.rows++; p.rows > MaxSide || p.rows*p.width > MaxCells {
		return fmt.Errorf("line %d: map too large: at most %d rows and %d cells in all", line, MaxSide, MaxCells)
	}
	p.cells = append(p.cells, row...)
	return nil
}

func (p *mapParser) grid() (*Grid, error) {
	if p.rows == 0 {
		return nil, errors.New("map is empty: want one row per line of '.' (free) and '#' (blocked)")
	}
	return NewGrid(p.width, p.rows, func(x, y int) bool { return p.cells[y*p.width+x] == cellBlocked })
}

// checkRow checks one row's cells, and its width against want (0: any).
func checkRow(row []byte, line, want int) error {
	if len(row) > MaxSide {
		return fmt.Errorf("line %d: row longer than %d cells", line, MaxSide)
	}
	for i, c := range row {
		if c != cellFree && c != cellBlocked {
			return fmt.Errorf("line %d, column %d: unexpected %q; want '.' (free) or '#' (blocked)", line, i+1, c)
		}
	}
	if want != 0 && len(row) != want {
		return fmt.Errorf("line %d: row has %d cells, want %d like the first row (maps are rectangular)", line, len(row), want)
	}
	return nil
}
