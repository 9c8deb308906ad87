package security

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// TestEveryAttackIsDocumented keeps docs/security.md and this package in
// step: every attack test is named in the document, and every test the
// document names exists.
func TestEveryAttackIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	named := map[string]bool{}
	for _, m := range regexp.MustCompile("`(Test(?:Hole|Attacker)\\w+)`").FindAllSubmatch(doc, -1) {
		named[string(m[1])] = true
	}
	files, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	decl := regexp.MustCompile(`(?m)^func (Test(?:Hole|Attacker)\w+)\(`)
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range decl.FindAllSubmatch(src, -1) {
			defined[string(m[1])] = true
		}
	}
	for name := range defined {
		if !named[name] {
			t.Errorf("%s performs an attack but docs/security.md does not name it", name)
		}
	}
	for name := range named {
		if !defined[name] {
			t.Errorf("docs/security.md names %s, which does not exist", name)
		}
	}
}
