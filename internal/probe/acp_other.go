//go:build !windows

package probe

// systemCodePage is DefaultCodePage: off Windows (the simulated host) there
// is no ANSI code page to ask for, and the simulated dtrace prints as a
// Western European Windows would.
func systemCodePage() uint32 { return DefaultCodePage }
