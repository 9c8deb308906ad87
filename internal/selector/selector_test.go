package selector

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
)

// agentLabels is what an agent's full label set looks like: built-in labels
// derived from its inventory plus user labels.
var agentLabels = map[string]string{
	LabelHostname: "web-01",
	LabelOSBuild:  "22631",
	"site":        "ams",
	"role":        "vdi",
	"team/owner":  "sre",
	"tier":        "3",
}

func TestParseAndMatches(t *testing.T) {
	kiosk := map[string]string{LabelHostname: "kiosk-7", LabelOSBuild: "19045", "site": "fra", "role": "kiosk", "canary": ""}
	bare := map[string]string{}
	tests := []struct {
		expr  string
		match [3]bool // agentLabels, kiosk, bare
	}{
		{"", [3]bool{true, true, true}},
		{"site=ams", [3]bool{true, false, false}},
		{"site==ams", [3]bool{true, false, false}},
		{"site!=ams", [3]bool{false, true, true}},
		{"site in (ams,fra)", [3]bool{true, true, false}},
		{"site in (ams)", [3]bool{true, false, false}},
		{"site notin (ams)", [3]bool{false, true, true}},
		{"site notin (ams,fra)", [3]bool{false, false, true}},
		{"canary", [3]bool{false, true, false}},
		{"!canary", [3]bool{true, false, true}},
		{"site", [3]bool{true, true, false}},
		{"!site", [3]bool{false, false, true}},
		{"site=ams,role=vdi", [3]bool{true, false, false}},
		{"site=ams,role=kiosk", [3]bool{false, false, false}},
		{"site in (ams,fra),!canary", [3]bool{true, false, false}},
		{"role in (vdi,kiosk), site!=fra", [3]bool{true, false, false}},
		{"  site = ams  ", [3]bool{true, false, false}},
		{"canary=", [3]bool{false, true, false}},
		{"canary==", [3]bool{false, true, false}},
		// kubectl syntax: "()" is the set holding the empty value.
		{"canary in ()", [3]bool{false, true, false}},
		{"team/owner=sre", [3]bool{true, false, false}},
		{"tier>2", [3]bool{true, false, false}},
		{"tier<2", [3]bool{false, false, false}},
		// Built-in labels are selectable like any other.
		{"hostname=web-01", [3]bool{true, false, false}},
		{"hostname in (web-01,kiosk-7)", [3]bool{true, true, false}},
		{"os.build=22631", [3]bool{true, false, false}},
		{"os.build notin (22631)", [3]bool{false, true, true}},
		{"!hostname", [3]bool{false, false, true}},
		{"hostname", [3]bool{true, true, false}},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			s, err := Parse(tt.expr)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.expr, err)
			}
			for i, set := range []map[string]string{agentLabels, kiosk, bare} {
				if got := s.Matches(set); got != tt.match[i] {
					t.Errorf("Parse(%q).Matches(%v) = %v, want %v", tt.expr, set, got, tt.match[i])
				}
			}
			if got := s.Matches(nil); got != tt.match[2] {
				t.Errorf("Matches(nil) = %v, want same as empty set (%v)", got, tt.match[2])
			}
			// The canonical form parses back to an equivalent selector.
			again, err := Parse(s.String())
			if err != nil {
				t.Fatalf("Parse(String() = %q): %v", s.String(), err)
			}
			if again.String() != s.String() {
				t.Errorf("String not canonical: %q -> %q", s.String(), again.String())
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	tests := []string{
		"=ams", // no key
		"site in (ams",
		"site in ams",
		"site notin",
		"!site=ams",
		"site=ams=fra",
		"site=a b",
		"-site=ams",
		"site-=ams",
		"Site Name=ams",
		"site=" + strings.Repeat("a", 64), // value too long
		strings.Repeat("k", 64) + "=v",    // key name too long
		"site=-ams",
		"site=ams-",
		"tier>x",
		"tier>",
		"a,,b",
		"site=ams,",
		",site=ams",
		"!",
		"(",
		"site in (a,b))",
	}
	for _, expr := range tests {
		t.Run(expr, func(t *testing.T) {
			s, err := Parse(expr)
			if err == nil {
				t.Fatalf("Parse(%q) = %q, want error", expr, s.String())
			}
			if !strings.Contains(err.Error(), "selector") {
				t.Errorf("error %q does not say it is about a selector", err)
			}
		})
	}
}

func TestZeroAndEverything(t *testing.T) {
	var zero Selector
	for _, s := range []Selector{zero, Everything()} {
		if !s.Matches(agentLabels) || !s.Matches(nil) {
			t.Errorf("%#v does not match everything", s)
		}
		if s.String() != "" {
			t.Errorf("String() = %q, want empty", s.String())
		}
	}
}

func TestIsBuiltin(t *testing.T) {
	for k, want := range map[string]bool{
		"hostname": true, "os.build": true,
		"Hostname": false, "host": false, "os": false, "os.build.x": false, "": false, "example.com/hostname": false,
	} {
		if got := IsBuiltin(k); got != want {
			t.Errorf("IsBuiltin(%q) = %v, want %v", k, got, want)
		}
	}
}

func TestValidateKeyAndValue(t *testing.T) {
	keys := map[string]bool{
		"site":                          true,
		"a":                             true,
		"team.name_x-1":                 true,
		"example.com/site":              true,
		strings.Repeat("k", 63):         true,
		strings.Repeat("k", 64):         false,
		"":                              false,
		"-site":                         false,
		"site-":                         false,
		"si te":                         false,
		"a/b/c":                         false,
		"/site":                         false,
		"Example.com/site":              false, // prefix must be a lower-case DNS subdomain
		"example.com/":                  false,
		"sité":                          false,
		"site\n":                        false,
		strings.Repeat("p", 254) + "/k": false,
	}
	for k, ok := range keys {
		if err := ValidateKey(k); (err == nil) != ok {
			t.Errorf("ValidateKey(%q) = %v, want ok=%v", k, err, ok)
		}
	}
	values := map[string]bool{
		"":                      true,
		"ams":                   true,
		"A.b_c-9":               true,
		strings.Repeat("v", 63): true,
		strings.Repeat("v", 64): false,
		"-ams":                  false,
		"ams.":                  false,
		"a b":                   false,
		"a/b":                   false,
		"a,b":                   false,
		"a=b":                   false,
	}
	for v, ok := range values {
		if err := ValidateValue("k", v); (err == nil) != ok {
			t.Errorf("ValidateValue(%q) = %v, want ok=%v", v, err, ok)
		}
	}
}

func TestValidateUserLabels(t *testing.T) {
	tests := []struct {
		name    string
		set     map[string]string
		wantErr string // "" = valid; otherwise a substring naming the key
	}{
		{"nil", nil, ""},
		{"empty", map[string]string{}, ""},
		{"valid", map[string]string{"site": "ams", "example.com/team": "sre", "canary": ""}, ""},
		{"hostname", map[string]string{"site": "ams", "hostname": "x"}, `"hostname"`},
		{"os.build", map[string]string{"os.build": "22631"}, `"os.build"`},
		{"builtin with empty value", map[string]string{"hostname": ""}, `"hostname"`},
		{"bad key", map[string]string{"bad key": "x"}, `"bad key"`},
		{"bad value", map[string]string{"site": "a b"}, `"site"`},
		{"long value", map[string]string{"site": strings.Repeat("a", 64)}, `"site"`},
		{"empty key", map[string]string{"": "x"}, `""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateUserLabels(tt.set)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ValidateUserLabels(%v) = %v", tt.set, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidateUserLabels(%v) = nil, want error", tt.set)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not name %s", err, tt.wantErr)
			}
		})
	}
	// Builtin errors say why, so the user knows not to retry.
	err := ValidateUserLabels(map[string]string{"hostname": "x"})
	if err == nil || !strings.Contains(err.Error(), "built-in") {
		t.Errorf("hostname error = %v, want it to say built-in", err)
	}
	// With several bad keys the error is deterministic (sorted keys).
	bad := map[string]string{"z z": "1", "hostname": "x", "os.build": "y", "a a": "2"}
	first := ValidateUserLabels(bad)
	for range 20 {
		if err := ValidateUserLabels(bad); err == nil || err.Error() != first.Error() {
			t.Fatalf("errors differ between calls: %v vs %v", first, err)
		}
	}
	if !strings.Contains(first.Error(), `"a a"`) {
		t.Errorf("first error %q is not about the first key in order", first)
	}
}

func TestParseAssignments(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantSet    map[string]string
		wantRemove []string
		wantErr    string
	}{
		{"none", nil, map[string]string{}, nil, ""},
		{"set one", []string{"site=ams"}, map[string]string{"site": "ams"}, nil, ""},
		{"set empty value", []string{"canary="}, map[string]string{"canary": ""}, nil, ""},
		{"set prefixed", []string{"example.com/team=sre"}, map[string]string{"example.com/team": "sre"}, nil, ""},
		{"remove one", []string{"site-"}, map[string]string{}, []string{"site"}, ""},
		{"remove dashed key", []string{"rack-id-"}, map[string]string{}, []string{"rack-id"}, ""},
		{"mixed", []string{"site=ams", "canary-", "role=vdi", "old-"}, map[string]string{"site": "ams", "role": "vdi"}, []string{"canary", "old"}, ""},
		{"last set wins", []string{"site=ams", "site=fra"}, map[string]string{"site": "fra"}, nil, ""},
		{"value ending in dash", []string{"site=ams-"}, nil, nil, `"site"`},
		{"no operator", []string{"site"}, nil, nil, "KEY=VALUE"},
		{"empty arg", []string{""}, nil, nil, "KEY=VALUE"},
		{"only dash", []string{"-"}, nil, nil, `""`},
		{"empty key", []string{"=ams"}, nil, nil, `""`},
		{"double equals", []string{"site=a=b"}, nil, nil, `"site"`},
		{"bad key", []string{"bad key=x"}, nil, nil, `"bad key"`},
		{"bad remove key", []string{"bad key-"}, nil, nil, `"bad key"`},
		{"double dash remove", []string{"site--"}, nil, nil, `"site-"`},
		{"bad after good", []string{"site=ams", "oops"}, nil, nil, `"oops"`},
		{"value too long", []string{"k=" + strings.Repeat("v", 64)}, nil, nil, `"k"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, remove, err := ParseAssignments(tt.args)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseAssignments(%q) = %v, %v; want error", tt.args, set, remove)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %q does not contain %s", err, tt.wantErr)
				}
				if set != nil || remove != nil {
					t.Errorf("on error got set=%v remove=%v, want nil", set, remove)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAssignments(%q): %v", tt.args, err)
			}
			if set == nil || !maps.Equal(set, tt.wantSet) {
				t.Errorf("set = %v, want %v", set, tt.wantSet)
			}
			if !slices.Equal(remove, tt.wantRemove) {
				t.Errorf("remove = %q, want %q", remove, tt.wantRemove)
			}
		})
	}
}

func TestParseSet(t *testing.T) {
	tests := []struct {
		in      string
		want    map[string]string
		wantErr bool
	}{
		{"", map[string]string{}, false},
		{"   ", map[string]string{}, false},
		{"site=ams", map[string]string{"site": "ams"}, false},
		{"site=ams,role=vdi", map[string]string{"site": "ams", "role": "vdi"}, false},
		{" site=ams , role=vdi ", map[string]string{"site": "ams", "role": "vdi"}, false},
		{"canary=", map[string]string{"canary": ""}, false},
		{"site=ams,site=fra", map[string]string{"site": "fra"}, false},
		{"example.com/team=sre", map[string]string{"example.com/team": "sre"}, false},
		{"site", nil, true},
		{"site=ams,", nil, true},
		{",site=ams", nil, true},
		{"site=ams,,role=vdi", nil, true},
		{"=ams", nil, true},
		{"site = ams", nil, true},
		{"site=a b", nil, true},
		{"site=a=b", nil, true},
		{"site-", nil, true},
		{"site=" + strings.Repeat("a", 64), nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSet(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseSet(%q) = %v, want error", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSet(%q): %v", tt.in, err)
			}
			if got == nil || !maps.Equal(got, tt.want) {
				t.Errorf("ParseSet(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

// A set written by ParseSet is matched by the equivalent selector.
func TestParseSetMatchesSelector(t *testing.T) {
	set, err := ParseSet("site=ams,role=vdi")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Parse("site=ams,role=vdi")
	if err != nil {
		t.Fatal(err)
	}
	if !s.Matches(set) {
		t.Errorf("%q does not match %v", s, set)
	}
}

func TestValidateUserLabelsCount(t *testing.T) {
	set := map[string]string{}
	for i := range MaxUserLabels {
		set[fmt.Sprintf("k%d", i)] = "v"
	}
	if err := ValidateUserLabels(set); err != nil {
		t.Fatalf("%d labels: %v", len(set), err)
	}
	set["one-more"] = "v"
	err := ValidateUserLabels(set)
	if err == nil || !strings.Contains(err.Error(), "at most 64") {
		t.Fatalf("%d labels: %v", len(set), err)
	}
}

// TestParseRequired: a selector that is empty or only blanks selects every
// agent when parsed, so calls that act on machines refuse it.
func TestParseRequired(t *testing.T) {
	for _, blank := range []string{"", " ", "\t\n "} {
		if everything, err := Parse(blank); err != nil || !everything.Matches(map[string]string{"site": "ams"}) {
			t.Fatalf("Parse(%q) = %v, %v: the premise (blank selects everything) no longer holds", blank, everything, err)
		}
		if _, err := ParseRequired(blank); !errors.Is(err, ErrEmpty) {
			t.Errorf("ParseRequired(%q) = %v, want ErrEmpty", blank, err)
		}
	}
	s, err := ParseRequired("site=ams")
	if err != nil || !s.Matches(map[string]string{"site": "ams"}) || s.Matches(map[string]string{"site": "lab"}) {
		t.Errorf("ParseRequired(site=ams) = %v, %v", s, err)
	}
	if _, err := ParseRequired("site in ("); err == nil || errors.Is(err, ErrEmpty) {
		t.Errorf("ParseRequired of a bad selector = %v, want a parse error", err)
	}
}

func TestSuggest(t *testing.T) {
	fleet := []map[string]string{
		{"hostname": "LAB-VDI-01", "site": "lab", "role": "vdi"},
		{"hostname": "LAB-KIOSK-01", "site": "lab", "role": "kiosk"},
	}
	for _, tc := range []struct{ sel, want string }{
		{"role=vid", "role=vdi"},
		{"site=lab,role=vid", "role=vdi,site=lab"},
		{"rol=vdi", "role=vdi"},
		{"role in (vid,kiosk)", "role in (kiosk,vdi)"},
		{"role=server", ""}, // nothing close
		{"role!=vid", ""},   // not an equality
		{"role=vdi", ""},    // already there
		{"a=b", ""},         // a one-letter key is not a typo of anything
		{"hostname=LAB-VDI-1", "hostname=LAB-VDI-01"},
	} {
		s, err := Parse(tc.sel)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Suggest(fleet); got != tc.want {
			t.Errorf("Suggest(%q) = %q, want %q", tc.sel, got, tc.want)
		}
	}
}
