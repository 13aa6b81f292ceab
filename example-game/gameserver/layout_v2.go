//go:build regionv2

package main

// Layout version 2, a build for the tests of a migration (-tags regionv2):
// bags of 16 kinds of goods, in records of 320 bytes.
const (
	regionVersion    = 2
	regionRecordSize = 320
	bagSlots         = 16
)
