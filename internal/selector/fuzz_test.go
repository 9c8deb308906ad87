package selector

import "testing"

// fuzzSets are the label sets every fuzzed selector and its canonical form
// must agree on.
var fuzzSets = []map[string]string{
	nil,
	{},
	agentLabels,
	{LabelHostname: "kiosk-7", LabelOSBuild: "19045", "site": "fra", "role": "kiosk", "canary": ""},
	{"a": "1", "b": "2", "c": ""},
	{"tier": "10", "example.com/team": "sre"},
}

// FuzzParse: Parse never panics, and anything it accepts renders through
// String() to a selector that parses again and selects exactly the same
// label sets. The committed corpus is in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"",
		"site=ams",
		"site in (ams,fra),!canary",
		"role notin (vdi, kiosk), hostname",
		"tier>2,tier<10",
		"example.com/team==sre,a!=1",
		"canary in ()",
		"site in (ams",
		"!",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		s, err := Parse(expr)
		if err != nil {
			return
		}
		canon := s.String()
		again, err := Parse(canon)
		if err != nil {
			t.Fatalf("Parse(%q) ok, but its String() %q does not parse: %v", expr, canon, err)
		}
		if again.String() != canon {
			t.Fatalf("String not stable: %q -> %q -> %q", expr, canon, again.String())
		}
		for _, set := range fuzzSets {
			if a, b := s.Matches(set), again.Matches(set); a != b {
				t.Fatalf("Parse(%q).Matches(%v) = %v, but its String() %q gives %v", expr, set, a, canon, b)
			}
		}
	})
}
