package statedir

import (
	"path/filepath"
	"testing"
)

func TestJoin(t *testing.T) {
	dir := t.TempDir()
	got, err := Join(dir, "scripts", "c-1.d")
	if err != nil || got != filepath.Join(dir, "scripts", "c-1.d") {
		t.Fatalf("Join = %q, %v", got, err)
	}
	for _, elems := range [][]string{
		{"scripts", "../../evil.d"},
		{"..", "x"},
		{"scripts", `..\..\evil.d`},
		{"scripts", "a/b"},
		{""},
		{"."},
		{"x\x00y"},
	} {
		if p, err := Join(dir, elems...); err == nil {
			t.Errorf("Join(%q) = %q, want a refusal", elems, p)
		}
	}
	if _, err := Join("", "x"); err == nil {
		t.Error("Join with no state directory accepted")
	}
}
