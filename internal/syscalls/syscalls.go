// Package syscalls knows which Nt* names the DTrace syscall provider on
// Windows has probes for, so that a capture naming a syscall with no probe
// is refused before it is stored instead of failing on every machine.
//
// DTrace on Windows instruments the kernel's own system service table only:
// the syscall provider has a probe pair for each Nt* service of
// ntoskrnl.exe, named as ntdll.dll exports its stub (syscall::NtCreateFile:
// return). The win32k services (NtUser*, NtGdi*, stubs in win32u.dll) have
// no probes, and Microsoft has no plans to add them:
// https://github.com/microsoft/DTrace-on-Windows/issues/23 ("Add support for
// win32k syscalls", open; "We don't have plans to implement this").
//
// The table of Nt* names is generated from ntdll's import library as
// shipped by mingw-w64 (Source); see README.md. A syscall added to Windows
// after that library was made is not in it: such a capture needs a raw
// script.
package syscalls

//go:generate go run ./gen

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/livedump/livedump/internal/editdist"
)

var (
	shape = regexp.MustCompile(`^Nt[A-Za-z0-9]{1,63}$`)
	// win32k is the prefixes of the win32k services.
	win32k = []string{"NtUser", "NtGdi"}
	// lower maps each table name in lower case to the name.
	lower = func() map[string]string {
		m := make(map[string]string, len(ntdll))
		for _, n := range ntdll {
			m[strings.ToLower(n)] = n
		}
		return m
	}()
)

// Names returns the Nt* syscall names of the table, sorted.
func Names() []string { return append([]string(nil), ntdll...) }

// Known reports whether name is exactly (case included) an Nt* syscall of
// the table.
func Known(name string) bool {
	i := sort.SearchStrings(ntdll, name)
	return i < len(ntdll) && ntdll[i] == name
}

// Check returns nil when the syscall provider has probes for name, and
// otherwise an error that says why not and, where one is close, which name
// was meant ("did you mean NtCreateFile?"). D probe names are
// case-sensitive, so "ntcreatefile" is refused with the right spelling.
func Check(name string) error {
	if Known(name) {
		return nil
	}
	q := fmt.Sprintf("%.80q", name)
	for _, p := range win32k {
		if len(name) > len(p) && strings.EqualFold(name[:len(p)], p) {
			return fmt.Errorf("%s is a win32k syscall: DTrace on Windows has no syscall probes for %s* or the other win32k (NtUser*, NtGdi*) syscalls (https://github.com/microsoft/DTrace-on-Windows/issues/23)", q, p)
		}
	}
	if n, ok := lower[strings.ToLower(name)]; ok {
		return fmt.Errorf("%s: probe names are case-sensitive; did you mean %s?", q, n)
	}
	if rest, ok := cutPrefixFold(name, "Zw"); ok {
		if n, ok := lower["nt"+strings.ToLower(rest)]; ok {
			return fmt.Errorf("%s: the syscall provider names syscalls Nt*, not Zw*; did you mean %s?", q, n)
		}
	}
	var why string
	if !shape.MatchString(name) {
		why = "is not an Nt syscall name like NtCreateFile (Nt, then 1 to 63 letters and digits)"
	} else {
		why = "is not a syscall exported by ntdll (table: " + Source + "; a newer syscall needs a raw script)"
	}
	if s := Suggest(name); s != "" {
		return fmt.Errorf("%s %s; did you mean %s?", q, why, s)
	}
	return fmt.Errorf("%s %s", q, why)
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// Suggest returns the table name closest to name (case-insensitive edit
// distance, also trying name with "Nt" in front), or "" when none is close:
// at most 1 edit for names up to 6 characters, else at most a third of the
// length, and never more than 4.
func Suggest(name string) string {
	if len(name) > 80 {
		return ""
	}
	l := strings.ToLower(name)
	limit := min(max(1, len(l)/3), 4)
	best, bestD := "", limit+1
	for _, cand := range []string{l, "nt" + l} {
		for _, n := range ntdll {
			ln := strings.ToLower(n)
			if abs(len(ln)-len(cand)) >= bestD {
				continue
			}
			if d := editdist.Distance(cand, ln, bestD); d < bestD { // ties: the first in sorted order
				best, bestD = n, d
			}
		}
	}
	if bestD > limit {
		return ""
	}
	return best
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
