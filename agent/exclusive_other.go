//go:build !windows

package agent

// exclusiveOpen is nil off Windows, where files have no sharing modes: the
// dump pipeline then relies on the size staying stable.
var exclusiveOpen func(string) bool
