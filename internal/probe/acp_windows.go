//go:build windows

package probe

import "golang.org/x/sys/windows"

// systemCodePage is the machine's ANSI code page, in which dtrace.exe
// prints names.
func systemCodePage() uint32 { return windows.GetACP() }
