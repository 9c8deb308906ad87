// Package ids validates the identifiers the controller and its agents
// exchange. Agents check every identifier a controller sends before it
// reaches a file name or a log line, because a compromised or impersonated
// controller (attacker 5 in docs/security.md) must not be able to make an
// agent write outside its state directory. Each kind has one rule, shared
// by whoever produces and whoever consumes it; every rule is a strict
// subset of what is safe as a file name on Windows and Linux.
package ids

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

var (
	// captureID is the controller's "c-<hex>" and what probe.Spec accepts.
	captureID = regexp.MustCompile(`^[a-z0-9-]{1,64}$`)
	// dumpID is what the controller's dump receiver accepts.
	dumpID = regexp.MustCompile(`^[0-9a-f]{8,64}$`)
	// directiveID covers the controller's hex IDs and its "arm-<capture>",
	// "disarm-<capture>" and "pull-<dump>" forms.
	directiveID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	sha256Hex   = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// MaxFileName bounds a file name received from a controller.
const MaxFileName = 128

// quote shows a refused value in an error: quoted, and cut short so that a
// megabyte of junk does not end up in a log or an acknowledgement.
func quote(s string) string {
	const max = 64
	if len(s) <= max {
		return fmt.Sprintf("%q", s)
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%q… (%d bytes)", s[:cut], len(s))
}

// CaptureID checks a capture ID: 1 to 64 of a-z, 0-9 and '-'.
func CaptureID(s string) error {
	if !captureID.MatchString(s) {
		return fmt.Errorf("capture_id %s: want 1 to 64 of a-z, 0-9 and -", quote(s))
	}
	return nil
}

// DumpID checks a dump ID: 8 to 64 lower-case hex digits.
func DumpID(s string) error {
	if !dumpID.MatchString(s) {
		return fmt.Errorf("dump_id %s: want 8 to 64 lower-case hex digits", quote(s))
	}
	return nil
}

// DirectiveID checks a directive ID: 1 to 128 letters, digits, '.', '_'
// and '-', starting with a letter or digit.
func DirectiveID(s string) error {
	if !directiveID.MatchString(s) {
		return fmt.Errorf("directive id %s: want 1 to 128 letters, digits, . _ and -, starting with a letter or digit", quote(s))
	}
	return nil
}

// SHA256 checks a content hash: 64 lower-case hex digits, the only form
// that content-addressed files are named by.
func SHA256(s string) error {
	if !sha256Hex.MatchString(s) {
		return fmt.Errorf("sha256 %s: want 64 lower-case hex digits", quote(s))
	}
	return nil
}

// windowsReserved are the device names Windows reserves in every
// directory, with or without an extension.
var windowsReserved = map[string]bool{"CON": true, "PRN": true, "AUX": true, "NUL": true, "CONIN$": true, "CONOUT$": true}

func init() {
	for _, p := range []string{"COM", "LPT"} {
		for _, d := range "0123456789¹²³" {
			windowsReserved[p+string(d)] = true
		}
	}
}

// FileName checks a single file name received from elsewhere (an
// artifact's name): 1 to 128 printable characters, no path separator,
// drive or stream colon, no characters Windows forbids in names, not "."
// or "..", no trailing dot or space, and not a Windows device name.
func FileName(s string) error {
	bad := func(why string) error { return fmt.Errorf("file name %s: %s", quote(s), why) }
	switch {
	case s == "" || len(s) > MaxFileName:
		return bad(fmt.Sprintf("want 1 to %d bytes", MaxFileName))
	case !utf8.ValidString(s):
		return bad("not UTF-8")
	case s == "." || s == "..":
		return bad("not a file name")
	case strings.ContainsAny(s, `/\:*?"<>|`):
		return bad(`must not contain / \ : * ? " < > |`)
	case strings.HasSuffix(s, ".") || strings.HasSuffix(s, " "):
		return bad("must not end with a dot or a space")
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return bad("must not contain control or non-printing characters")
		}
	}
	base, _, _ := strings.Cut(s, ".")
	if windowsReserved[strings.ToUpper(strings.TrimRight(base, " "))] {
		return bad("is a Windows device name")
	}
	return nil
}
