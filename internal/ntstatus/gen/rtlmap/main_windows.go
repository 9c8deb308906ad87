//go:build windows

// Command rtlmap prints what ntdll's RtlNtStatusToDosError makes of every
// NTSTATUS value known to package ntstatus, for ../main.go -rtlmap. Run it on
// Windows or under Wine (../rtlmap.sh does the latter). Output:
//
//	# source: Wine 8.0 ntdll RtlNtStatusToDosError (build ...)
//	# header: Debian mingw-w64-common 10.0.0-3 ntstatus.h, winerror.h
//	0xC000000D 87
//	...
//
// golang.org/x/sys/windows exports no RtlNtStatusToDosError (NTStatus.Errno
// calls RtlNtStatusToDosErrorNoTeb), so the function is looked up in ntdll.
package main

import (
	"bufio"
	"fmt"
	"os"
	"unsafe"

	"github.com/livedump/livedump/internal/ntstatus"
	"golang.org/x/sys/windows"
)

func main() {
	ntdll := windows.NewLazySystemDLL("ntdll.dll")
	conv := ntdll.NewProc("RtlNtStatusToDosError")
	if err := conv.Find(); err != nil {
		fmt.Fprintln(os.Stderr, "rtlmap:", err)
		os.Exit(1)
	}
	w := bufio.NewWriter(os.Stdout)
	sys, build := system(ntdll)
	fmt.Fprintf(w, "# source: %s ntdll RtlNtStatusToDosError%s\n", sys, build)
	fmt.Fprintf(w, "# header: %s\n", ntstatus.HeaderSource)
	for _, v := range ntstatus.Values() {
		r, _, _ := conv.Call(uintptr(v))
		fmt.Fprintf(w, "0x%08X %d\n", v, uint32(r))
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "rtlmap:", err)
		os.Exit(1)
	}
}

// system names the system the mapping comes from, and any build detail.
func system(ntdll *windows.LazyDLL) (string, string) {
	if p := ntdll.NewProc("wine_get_version"); p.Find() == nil {
		ver := "Wine " + cstring(p)
		if b := ntdll.NewProc("wine_get_build_id"); b.Find() == nil {
			return ver, " (build " + cstring(b) + ")"
		}
		return ver, ""
	}
	v := windows.RtlGetVersion()
	return fmt.Sprintf("Windows %d.%d.%d", v.MajorVersion, v.MinorVersion, v.BuildNumber), ""
}

// cstring calls a function returning a const char* and copies the string.
func cstring(p *windows.LazyProc) string {
	r, _, _ := p.Call()
	return windows.BytePtrToString(*(**byte)(unsafe.Pointer(&r)))
}
