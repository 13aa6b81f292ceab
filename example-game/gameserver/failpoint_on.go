//go:build failaftermigrate

package main

const failAfterMigrate = true
