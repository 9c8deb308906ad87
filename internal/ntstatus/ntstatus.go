// Package ntstatus resolves status-code names and numbers to the 32-bit
// NTSTATUS values a Windows syscall return actually carries.
//
// Nt* syscalls return NTSTATUS (STATUS_INVALID_PARAMETER is 0xC000000D).
// Win32 error codes (ERROR_INVALID_PARAMETER is 87 = 0x57) are what
// RtlNtStatusToDosError makes of an NTSTATUS, many-to-one, and HRESULTs
// (E_INVALIDARG is 0x80070057) are COM return values that may wrap a Win32
// error or an NTSTATUS. Resolve turns each of these into the set of NTSTATUS
// values to compare a syscall return with, and refuses, with a reason,
// anything a syscall cannot return or that it would have to guess.
//
// The name tables are generated from Debian mingw-w64-common's ntstatus.h
// and winerror.h (HeaderSource), the NTSTATUS to Win32 mapping by calling
// RtlNtStatusToDosError for every known NTSTATUS (MappingSource). See
// README.md for how to regenerate them.
package ntstatus

//go:generate go run ./gen -names
//go:generate sh ./gen/rtlmap.sh

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/livedump/livedump/internal/editdist"
)

// Kind says what kind of code an input was.
type Kind string

// The kinds of input Resolve understands.
const (
	KindNTStatus Kind = "ntstatus" // an NTSTATUS name (ntstatus.h: STATUS_*, DBG_*, RPC_NT_*, EPT_NT_*)
	KindWin32    Kind = "win32"    // a Win32 error name (winerror.h: ERROR_*, WSA*, RPC_S_*, ...)
	KindHRESULT  Kind = "hresult"  // an HRESULT name (winerror.h: E_*, S_OK, ...)
	KindHex      Kind = "hex"      // a number: 0x-prefixed hexadecimal, or decimal digits
)

// Resolution is the outcome of a successful Resolve.
type Resolution struct {
	Input string // as given
	Kind  Kind
	Name  string // canonical (upper-case) name when known
	// Value is the code's own value: the NTSTATUS for ntstatus and hex, the
	// error number for win32, the HRESULT for hresult.
	Value uint32
	// NTStatus holds the 32-bit NTSTATUS values a syscall return can carry
	// for the input, sorted and deduplicated; never empty.
	NTStatus []uint32
	Note     string // human explanation of the resolution
}

// Error is the error Resolve returns. Its message is one line that starts
// with the input in double quotes.
type Error struct {
	Input  string
	Reason string
}

func (e *Error) Error() string { return quote(e.Input) + ": " + e.Reason }

// quote quotes s for an error message, shortening very long input.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}

func fail(input, format string, args ...any) (Resolution, error) {
	return Resolution{}, &Error{Input: input, Reason: fmt.Sprintf(format, args...)}
}

// The allow-list: anything else is rejected before any lookup.
var (
	nameRE   = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,127}$`)
	numberRE = regexp.MustCompile(`^(0[xX])?[0-9A-Fa-f]{1,8}$`)
)

const (
	facilityNTBit = 0x10000000 // HRESULT_FROM_NT sets it; reserved (0) in an NTSTATUS
	win32HRESULT  = 0x80070000 // HRESULT_FROM_WIN32(x) = 0x80070000 | x
)

type entry struct {
	name  string
	value uint32
}

// mapping is one RtlNtStatusToDosError result: a Win32 error number, or
// for a few NTSTATUS values an HRESULT.
type mapping struct {
	ntstatus uint32
	result   uint32
}

type named struct {
	kind  Kind
	value uint32
}

type index struct {
	byName  map[string]named
	ntName  map[uint32]string   // canonical NTSTATUS name per value
	w32Name map[uint32]string   // canonical Win32 name per error number
	hrName  map[uint32]string   // canonical HRESULT name per value
	w32ToNT map[uint32][]uint32 // RtlNtStatusToDosError result -> NTSTATUS values mapping to it, sorted
	values  []uint32            // known NTSTATUS values, sorted
	names   []string            // every name, for suggestions
}

// canonical returns, per value, the first name with prefix in table order,
// or the first name when none has it.
func canonical(t []entry, prefix string) map[uint32]string {
	m := make(map[uint32]string, len(t))
	for _, e := range t {
		old, ok := m[e.value]
		if !ok || (!strings.HasPrefix(old, prefix) && strings.HasPrefix(e.name, prefix)) {
			m[e.value] = e.name
		}
	}
	return m
}

var tables = sync.OnceValue(func() *index {
	ix := &index{
		byName:  make(map[string]named, len(ntstatusTable)+len(win32Table)+len(hresultTable)),
		ntName:  canonical(ntstatusTable, "STATUS_"),
		w32Name: canonical(win32Table, "ERROR_"),
		hrName:  canonical(hresultTable, "E_"),
		w32ToNT: map[uint32][]uint32{},
	}
	for _, t := range []struct {
		k Kind
		t []entry
	}{{KindNTStatus, ntstatusTable}, {KindWin32, win32Table}, {KindHRESULT, hresultTable}} {
		for _, e := range t.t {
			ix.byName[e.name] = named{t.k, e.value}
			ix.names = append(ix.names, e.name)
		}
	}
	for v := range ix.ntName {
		ix.values = append(ix.values, v)
	}
	sort.Slice(ix.values, func(i, j int) bool { return ix.values[i] < ix.values[j] })
	for _, m := range rtlMap { // sorted by NTSTATUS, one row each
		ix.w32ToNT[m.result] = append(ix.w32ToNT[m.result], m.ntstatus)
	}
	return ix
})

// Name returns the NTSTATUS name of v, or "" if v is not a known NTSTATUS.
// When several names share a value the STATUS_ name that comes first in
// ntstatus.h wins (0 is STATUS_SUCCESS, not STATUS_WAIT_0).
func Name(v uint32) string { return tables().ntName[v] }

// Describe is v as livedumpctl and the console print a status: hex, then
// its name when it has one ("0xC000000D STATUS_INVALID_PARAMETER").
func Describe(v uint32) string {
	s := fmt.Sprintf("0x%08X", v)
	if n := Name(v); n != "" {
		s += " " + n
	}
	return s
}

// Names returns the known names (NTSTATUS, Win32 error and HRESULT) that
// start with prefix in any case, sorted, at most limit of them (all when
// limit <= 0); more reports that some were left out. It is what shell
// completion offers for a status code.
func Names(prefix string, limit int) (names []string, more bool) {
	up := strings.ToUpper(prefix)
	for _, n := range tables().names {
		if strings.HasPrefix(n, up) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	names = slices.Compact(names)
	if limit > 0 && len(names) > limit {
		return names[:limit], true
	}
	return names, false
}

// Values returns every known NTSTATUS value, sorted.
func Values() []uint32 { return append([]uint32(nil), tables().values...) }

// Resolve resolves a status-code name or number to the NTSTATUS values a
// syscall return carries for it:
//
//   - an NTSTATUS name (STATUS_ACCESS_DENIED; case-insensitive) resolves to
//     its value;
//   - a Win32 error name (ERROR_INVALID_PARAMETER, NO_ERROR, WSAEINVAL, ...)
//     resolves to every NTSTATUS that RtlNtStatusToDosError maps to it, and
//     is an error when there is none;
//   - an HRESULT name resolves through the Win32 error it wraps
//     (0x8007xxxx, E_INVALIDARG) or the NTSTATUS it wraps (FACILITY_NT_BIT),
//     or to the NTSTATUS values RtlNtStatusToDosError turns into it (a few
//     become HRESULTs, e.g. SEC_E_WRONG_CREDENTIAL_HANDLE); any other HRESULT
//     (E_FAIL, S_OK) is a COM return value and an error;
//   - a number, 0x-prefixed hexadecimal (0xC000000D) or decimal digits (0),
//     is taken literally when it is a known NTSTATUS, or an unknown one with
//     NTSTATUS severity bits (0x4..., 0x8..., 0xC...); a value below 0x10000
//     that is a Win32 error number (0x57), a known HRESULT (0x80070057), an
//     HRESULT_FROM_WIN32 value (0x8007xxxx) or a value with the reserved
//     FACILITY_NT_BIT (0xD...) is an error that says what to write instead.
//     Bare hexadecimal without 0x (C000000D) is not accepted: it cannot be
//     told apart from a name or a decimal number.
//
// Errors are *Error.
func Resolve(s string) (Resolution, error) {
	switch {
	case nameRE.MatchString(s):
		return resolveName(s)
	case numberRE.MatchString(s):
		return resolveNumber(s)
	}
	return fail(s, "not a status-code name or number: give a name (letters, digits and _, starting with a letter, like STATUS_ACCESS_DENIED) or a number (0xC0000022)")
}

func resolveName(s string) (Resolution, error) {
	ix := tables()
	up := strings.ToUpper(s)
	n, ok := ix.byName[up]
	if !ok {
		return fail(s, "unknown status-code name: not an NTSTATUS, Win32 error or HRESULT name in %s%s", HeaderSource, suggest(ix, up))
	}
	r := Resolution{Input: s, Kind: n.kind, Name: up, Value: n.value}
	switch n.kind {
	case KindNTStatus:
		r.NTStatus = []uint32{n.value}
		r.Note = fmt.Sprintf("%s is the NTSTATUS 0x%08X", up, n.value)
		if c := ix.ntName[n.value]; c != up {
			r.Note += fmt.Sprintf(" (same value as %s)", c)
		}
		return r, nil
	case KindWin32:
		set := ix.w32ToNT[n.value]
		if len(set) == 0 {
			return fail(s, "%s is a Win32 error that no NTSTATUS maps to (RtlNtStatusToDosError), so a syscall cannot return it", win32Desc(ix, up, n.value))
		}
		r.NTStatus = append([]uint32(nil), set...)
		r.Note = fmt.Sprintf("%s is a Win32 error; a syscall returns the NTSTATUS values that map to it: %s", win32Desc(ix, up, n.value), ntList(ix, set))
		return r, nil
	}
	// HRESULT.
	h := n.value
	switch {
	case h&0xFFFF0000 == win32HRESULT:
		code := h & 0xFFFF
		set := ix.w32ToNT[code]
		if len(set) == 0 {
			return fail(s, "%s (0x%08X) is an HRESULT wrapping the Win32 error %s, which no NTSTATUS maps to (RtlNtStatusToDosError), so a syscall cannot return it", up, h, win32Desc(ix, ix.w32Name[code], code))
		}
		r.NTStatus = append([]uint32(nil), set...)
		r.Note = fmt.Sprintf("%s (0x%08X) is an HRESULT wrapping the Win32 error %s; a syscall returns the NTSTATUS values that map to it: %s", up, h, win32Desc(ix, ix.w32Name[code], code), ntList(ix, set))
		return r, nil
	case h&facilityNTBit != 0 && h>>30 != 0:
		nt := h &^ facilityNTBit
		r.NTStatus = []uint32{nt}
		r.Note = fmt.Sprintf("%s (0x%08X) is HRESULT_FROM_NT(0x%08X%s); a syscall returns the NTSTATUS itself", up, h, nt, paren(ix.ntName[nt]))
		return r, nil
	}
	if set := ix.w32ToNT[h]; h >= 0x10000 && len(set) > 0 {
		// RtlNtStatusToDosError makes a few NTSTATUS values into an
		// HRESULT, which GetLastError then reports.
		r.NTStatus = append([]uint32(nil), set...)
		r.Note = fmt.Sprintf("%s (0x%08X) is an HRESULT that RtlNtStatusToDosError makes of the NTSTATUS values: %s", up, h, ntList(ix, set))
		return r, nil
	}
	hint := ""
	if h == 0 {
		hint = "; for success use STATUS_SUCCESS"
	}
	return fail(s, "%s (0x%08X) is an HRESULT, a COM return value, not an NTSTATUS a syscall returns; only HRESULTs that wrap a Win32 error (0x8007xxxx) or an NTSTATUS (FACILITY_NT_BIT), or that RtlNtStatusToDosError produces, resolve%s", up, h, hint)
}

func resolveNumber(s string) (Resolution, error) {
	ix := tables()
	var v uint64
	var err error
	if len(s) > 2 && (s[1] == 'x' || s[1] == 'X') {
		v, err = strconv.ParseUint(s[2:], 16, 32)
	} else {
		if strings.ContainsAny(s, "abcdefABCDEF") {
			return fail(s, "hexadecimal numbers need the 0x prefix: write 0x%s", s)
		}
		v, err = strconv.ParseUint(s, 10, 32)
	}
	if err != nil { // unreachable after the allow-list, kept for safety
		return fail(s, "not a 32-bit number")
	}
	x := uint32(v)
	r := Resolution{Input: s, Kind: KindHex, Value: x, NTStatus: []uint32{x}}
	if name, ok := ix.ntName[x]; ok {
		r.Name = name
		r.Note = fmt.Sprintf("0x%08X is the NTSTATUS %s", x, name)
		if w, ok := ix.w32Name[x]; ok && x != 0 {
			r.Note += fmt.Sprintf("; it is also the value of the Win32 error %s, but a syscall returns NTSTATUS, so it is read as %s (write %s to mean the Win32 error)", win32Desc(ix, w, x), name, w)
		}
		return r, nil
	}
	if x < 0x10000 {
		if w, ok := ix.w32Name[x]; ok {
			set := ix.w32ToNT[x]
			if len(set) == 0 {
				return fail(s, "%s is the Win32 error %s, not an NTSTATUS; syscalls return NTSTATUS values, and none maps to %s, so a syscall cannot return it", s, win32Desc(ix, w, x), w)
			}
			return fail(s, "%s is the Win32 error %s, not an NTSTATUS; syscalls return NTSTATUS values: use the name %s to match the NTSTATUS values that map to it (%s)", s, win32Desc(ix, w, x), w, ntList(ix, set))
		}
		return fail(s, "0x%08X is not a known NTSTATUS, and values below 0x10000 are success codes or Win32 error numbers, which a syscall does not return; use a name", x)
	}
	if x&facilityNTBit != 0 {
		nt := x &^ facilityNTBit
		return fail(s, "0x%08X has the FACILITY_NT_BIT (0x10000000) that HRESULT_FROM_NT sets and no NTSTATUS has; a syscall returns the NTSTATUS itself: 0x%08X%s", x, nt, paren(ix.ntName[nt]))
	}
	if h, ok := ix.hrName[x]; ok {
		return fail(s, "0x%08X is the HRESULT %s, not an NTSTATUS; use the name %s to resolve it", x, h, h)
	}
	if x&0xFFFF0000 == win32HRESULT {
		code := x & 0xFFFF
		w := ix.w32Name[code]
		if w == "" {
			w = strconv.FormatUint(uint64(code), 10)
		}
		return fail(s, "0x%08X has the HRESULT_FROM_WIN32 form (0x8007xxxx) of the Win32 error %s, not an NTSTATUS; use the Win32 error name to match the NTSTATUS values that map to it", x, w)
	}
	if x>>30 == 0 {
		return fail(s, "0x%08X is not a known NTSTATUS and has success severity, so it is not a status a syscall fails with; use a name", x)
	}
	r.Note = fmt.Sprintf("0x%08X is not a known NTSTATUS name but has NTSTATUS severity bits; matched literally", x)
	return r, nil
}

// win32Desc formats a Win32 error as "NAME (87)".
func win32Desc(ix *index, name string, code uint32) string {
	if name == "" {
		name = "error"
	}
	if c := ix.w32Name[code]; c != "" && c != name {
		return fmt.Sprintf("%s (%d, same as %s)", name, code, c)
	}
	return fmt.Sprintf("%s (%d)", name, code)
}

// ntList names the NTSTATUS values of set, shortening long lists.
func ntList(ix *index, set []uint32) string {
	const max = 16
	var b strings.Builder
	for i, v := range set {
		if i == max {
			fmt.Fprintf(&b, " and %d more", len(set)-max)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		if n := ix.ntName[v]; n != "" {
			b.WriteString(n)
		} else {
			fmt.Fprintf(&b, "0x%08X", v)
		}
	}
	return b.String()
}

func paren(name string) string {
	if name == "" {
		return ""
	}
	return " " + name
}

// suggest returns "; did you mean X?" for a cheap close match, or "".
func suggest(ix *index, up string) string {
	var cands []string
	for _, p := range []string{"STATUS_", "ERROR_", "E_"} {
		if _, ok := ix.byName[p+up]; ok {
			cands = append(cands, p+up)
		}
	}
	if len(cands) == 0 && len(up) >= 6 {
		best := 3 // accept at most 2 edits
		if len(up) < 12 {
			best = 2 // at most 1 edit for short names
		}
		for _, n := range ix.names {
			if d := len(n) - len(up); d > best || -d > best {
				continue
			}
			d := editdist.Distance(up, n, best+1) // exact up to best
			switch {
			case d < best:
				best, cands = d, []string{n}
			case d == best && len(cands) > 0 && len(cands) < 3:
				cands = append(cands, n)
			}
		}
	}
	hex := ""
	if numberRE.MatchString(up) {
		hex = "; a hexadecimal number needs the 0x prefix: 0x" + up
	}
	if len(cands) == 0 {
		return hex
	}
	return "; did you mean " + strings.Join(cands, " or ") + "?" + hex
}
