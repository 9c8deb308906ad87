package listen

import "golang.org/x/sys/windows"

// Winsock's codes, which net.Listen returns on Windows.
var (
	errInUse        error = windows.WSAEADDRINUSE
	errDenied       error = windows.WSAEACCES
	errNotAvailable error = windows.WSAEADDRNOTAVAIL
)
