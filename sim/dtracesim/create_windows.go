package dtracesim

import (
	"os"

	"golang.org/x/sys/windows"
)

// createExclusive creates a new file for writing, failing if it exists,
// and opens it without sharing, as the kernel holds a live dump it is
// writing: until it is complete, any other open fails with a sharing
// violation.
func createExclusive(path string) (*os.File, error) {
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	h, err := windows.CreateFile(p, windows.GENERIC_WRITE, 0, nil, windows.CREATE_NEW, windows.FILE_ATTRIBUTE_NORMAL, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(h), path), nil
}
