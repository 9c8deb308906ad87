package pki

import (
	"net/url"
	"testing"
)

// FuzzParseIdentityURI checks that whatever ParseIdentityURI accepts is a
// valid identity whose canonical URI parses back to the same identity. The
// committed corpus is in testdata/fuzz/FuzzParseIdentityURI.
func FuzzParseIdentityURI(f *testing.F) {
	for _, s := range []string{
		"livedump://agent/0123456789abcdef",
		"livedump://operator/admin/alice@example.com",
		"LIVEDUMP://agent/ab",
		"livedump://agent/ab?",
		"livedump://%61gent/ab",
		"livedump://agent/a%62",
		"livedump://agent/../x",
		"livedump://operator/admin/a/b",
		"livedump://user@agent:1/ab?q#f",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := url.Parse(s)
		if err != nil {
			return
		}
		id, err := ParseIdentityURI(u)
		if err != nil {
			return
		}
		if err := id.Validate(); err != nil {
			t.Fatalf("ParseIdentityURI(%q) accepted invalid identity %+v: %v", s, id, err)
		}
		if id.Kind != KindAgent && id.Kind != KindOperator {
			t.Fatalf("ParseIdentityURI(%q) returned kind %d", s, id.Kind)
		}
		canon := id.URI()
		if canon == nil {
			t.Fatalf("%+v has no URI", id)
		}
		// The struct and its rendered string both parse back to id.
		back, err := ParseIdentityURI(canon)
		if err != nil || back != id {
			t.Fatalf("ParseIdentityURI(URI()) of %q = %+v, %v; want %+v", s, back, err, id)
		}
		reparsed, err := url.Parse(canon.String())
		if err != nil {
			t.Fatalf("url.Parse(%q): %v", canon.String(), err)
		}
		back, err = ParseIdentityURI(reparsed)
		if err != nil || back != id {
			t.Fatalf("ParseIdentityURI(%q) from %q = %+v, %v; want %+v", canon.String(), s, back, err, id)
		}
		// Only the agent or operator fields are set, never both.
		switch id.Kind {
		case KindAgent:
			if id.Role != "" || id.Name != "" {
				t.Fatalf("agent identity with operator fields: %+v", id)
			}
		case KindOperator:
			if id.AgentID != "" {
				t.Fatalf("operator identity with agent id: %+v", id)
			}
		}
	})
}
