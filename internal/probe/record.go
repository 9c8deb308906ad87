package probe

import (
	"strconv"
	"strings"
	"time"
)

// Record is one firing of a capture probe, as printed between
// "@@livedump begin" and "@@livedump end" by a script rendered by
// Render.
type Record struct {
	// Seq is the script's hit counter (1 for the first firing of a dtrace
	// run; it starts again at 1 when dtrace is restarted).
	Seq int
	// Time is walltimestamp, in UTC.
	Time time.Time
	PID  int
	TID  int
	// Probe is "function:name", e.g. "NtCreateFile:return".
	Probe string
	// Status is the syscall's return value as (uint32_t)arg0.
	Status uint32
	// Process is execname: the image name truncated to 14 characters.
	// Trailing white space is not kept.
	Process string
	// User is the user stack, innermost frame first.
	User []Frame
	// Kernel is the kernel stack, innermost frame first; nil when the
	// script prints none.
	Kernel []Frame
}

// Frame is one stack frame as dtrace prints it. The forms are
// module`function+0xoff, module`function (offset 0), module`0xaddr (the
// module is known but not the symbol) and 0xaddr (nothing is known, e.g.
// the process exited before dtrace symbolized its stack).
type Frame struct {
	Module   string
	Function string
	Offset   uint64
	Address  uint64 // set only when there is no Function
	Raw      string // the frame as printed, without indentation
}

// String is the frame as dtrace printed it.
func (f Frame) String() string { return f.Raw }

// ParseFrame parses one frame line. Leading and trailing white space is
// ignored. A line in none of the known forms gives a Frame with only Raw
// set (and Function, when the text has no backtick but is not an address).
func ParseFrame(line string) Frame {
	raw := strings.TrimSpace(line)
	f := Frame{Raw: raw}
	mod, sym, hasMod := strings.Cut(raw, "`")
	if !hasMod {
		if a, ok := parseHex(raw); ok {
			f.Address = a
		} else {
			f.Function = raw
		}
		return f
	}
	f.Module = mod
	if a, ok := parseHex(sym); ok {
		f.Address = a
		return f
	}
	f.Function = sym
	if i := strings.LastIndex(sym, "+0x"); i > 0 {
		if off, ok := parseHex(sym[i+1:]); ok {
			f.Function, f.Offset = sym[:i], off
		}
	}
	return f
}

// parseHex parses "0x" followed by 1 to 16 hexadecimal digits.
func parseHex(s string) (uint64, bool) {
	digits, ok := strings.CutPrefix(s, "0x")
	if !ok || len(digits) == 0 || len(digits) > 16 {
		return 0, false
	}
	v, err := strconv.ParseUint(digits, 16, 64)
	return v, err == nil
}
