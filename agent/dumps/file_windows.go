//go:build windows

package dumps

import (
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/windows"
)

// OpensExclusively reports whether path opens with no sharing at all,
// which fails while Windows still has the dump open for writing. Pass it
// as Config.Exclusive.
func OpensExclusively(path string) bool {
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return false
	}
	h, err := windows.CreateFile(p, windows.GENERIC_READ, 0, nil, windows.OPEN_EXISTING, windows.FILE_ATTRIBUTE_NORMAL, 0)
	if err != nil {
		return false
	}
	_ = windows.CloseHandle(h)
	return true
}

// birthTime returns the file's creation time.
func birthTime(fi os.FileInfo) (time.Time, bool) {
	d, ok := fi.Sys().(*syscall.Win32FileAttributeData)
	if !ok || d.CreationTime.Nanoseconds() == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, d.CreationTime.Nanoseconds()), true
}
