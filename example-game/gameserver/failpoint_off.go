//go:build !failaftermigrate

package main

// failAfterMigrate makes a build for the tests (-tags failaftermigrate)
// exit once it has migrated the region, before it is ready: an upgrade
// that fails after the migration, so that a test can see the rollback find
// the older region intact.
const failAfterMigrate = false
