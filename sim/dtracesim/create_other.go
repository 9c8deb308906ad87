//go:build !windows

package dtracesim

import "os"

// createExclusive creates a new file for writing, failing if it exists.
// POSIX has no share modes: the file simply stays open until complete.
func createExclusive(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
}
