//go:build !unix

package controller

// openFileLimit is unknown here; the default connection cap applies.
func openFileLimit() int { return 0 }
