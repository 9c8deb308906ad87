//go:build !windows

package dtracesim

import (
	"errors"
	"syscall"
)

// processAlive reports whether pid is a running process (signal 0 probes
// it without touching it).
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
