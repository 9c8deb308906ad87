package ids

import (
	"strings"
	"testing"

	"github.com/livedump/livedump/internal/probe"
)

func TestRules(t *testing.T) {
	for _, tc := range []struct {
		name  string
		check func(string) error
		ok    []string
		bad   []string
		field string
	}{
		{"capture", CaptureID, []string{"c-0123456789ab", "dump-42", "a"},
			[]string{"", "../../evil", `..\evil`, "C-UPPER", "a/b", "a.b", strings.Repeat("a", 65), "a\x00"}, "capture_id"},
		{"dump", DumpID, []string{"0123abcd", strings.Repeat("f", 64)},
			[]string{"", "0123abc", "../../evil", "0123ABCD", strings.Repeat("f", 65)}, "dump_id"},
		{"directive", DirectiveID, []string{"0123456789abcdef01234567", "arm-c-0123456789ab", "pull-0123abcd", "disarm-c-1"},
			[]string{"", "../evil", ".hidden", "a/b", `a\b`, "a\nb", strings.Repeat("a", 129)}, "directive id"},
		{"sha256", SHA256, []string{strings.Repeat("ab", 32)},
			[]string{"", strings.Repeat("AB", 32), strings.Repeat("ab", 31), "../../" + strings.Repeat("a", 58), strings.Repeat("ab", 32) + ".msi"}, "sha256"},
		{"file name", FileName, []string{"DTrace.amd64.msi", "DTrace (1).msi", "Äpfel.msi", "console.msi"},
			[]string{"", ".", "..", "../x.msi", `..\x.msi`, "C:x.msi", "x.msi:stream", "a\x01b", "x.msi.", "x.msi ", "NUL", "nul.msi", "COM1.msi", "lpt9", strings.Repeat("a", 129)}, "file name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, s := range tc.ok {
				if err := tc.check(s); err != nil {
					t.Errorf("%q refused: %v", s, err)
				}
			}
			for _, s := range tc.bad {
				err := tc.check(s)
				if err == nil {
					t.Errorf("%q accepted", s)
					continue
				}
				if !strings.HasPrefix(err.Error(), tc.field) {
					t.Errorf("%q: error %q does not start with the field %s", s, err, tc.field)
				}
			}
		})
	}
}

// TestCaptureIDMatchesProbe keeps the agent's rule and the capture spec's
// (which the controller applies when it creates a capture) the same.
func TestCaptureIDMatchesProbe(t *testing.T) {
	for _, id := range []string{"c-0123456789ab", "a", "../x", "A", strings.Repeat("a", 64), strings.Repeat("a", 65), "a_b"} {
		spec := probe.Spec{CaptureID: id, RawScript: "BEGIN { exit(0); }", Action: probe.ActionStacks}
		perr := spec.Validate()
		probeOK := perr == nil || !strings.Contains(perr.Error(), "capture_id")
		if ours := CaptureID(id) == nil; ours != probeOK {
			t.Errorf("%q: ids.CaptureID ok=%v, probe.Spec ok=%v (%v)", id, ours, probeOK, perr)
		}
	}
}

func TestQuoteBounds(t *testing.T) {
	err := DirectiveID(strings.Repeat("é", 10000))
	if len(err.Error()) > 300 {
		t.Fatalf("error for a long value is %d bytes", len(err.Error()))
	}
}
