//go:build !regionv2

package main

// The region's layout (region.go). A build that changes it raises
// regionVersion, and migrates the previous layouts' regions (migrate.go).
const (
	regionVersion    = 1
	regionRecordSize = 256
	bagSlots         = 8 // goods a bag holds, at most
)
