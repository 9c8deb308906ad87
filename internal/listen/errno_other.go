//go:build !windows

package listen

import "syscall"

var (
	errInUse        error = syscall.EADDRINUSE
	errDenied       error = syscall.EACCES
	errNotAvailable error = syscall.EADDRNOTAVAIL
)
