//go:build !windows

// Command rtlmap must run on Windows (or under Wine): see main_windows.go.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "rtlmap: calls ntdll RtlNtStatusToDosError, so it runs on Windows or under Wine; see ../rtlmap.sh")
	os.Exit(2)
}
