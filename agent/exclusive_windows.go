//go:build windows

package agent

import (
	"errors"

	"golang.org/x/sys/windows"
)

// exclusiveOpen reports whether path opens with no sharing at all: while
// Windows is still writing a live dump it holds the file, and this open
// fails with a sharing violation.
func exclusiveOpen(path string) bool {
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return false
	}
	h, err := windows.CreateFile(p, windows.GENERIC_READ, 0, nil, windows.OPEN_EXISTING, windows.FILE_ATTRIBUTE_NORMAL, 0)
	if errors.Is(err, windows.ERROR_SHARING_VIOLATION) || err != nil {
		return false
	}
	windows.CloseHandle(h)
	return true
}
