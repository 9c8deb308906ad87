package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"strings"
	"testing"
	"time"
)

func mustParseURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatalf("url.Parse(%q): %v", s, err)
	}
	return u
}

func TestIdentityURIRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		id      Identity
		uri     string
		display string
	}{
		{"agent", AgentIdentity("0123456789abcdef"), "livedump://agent/0123456789abcdef", "agent/0123456789abcdef"},
		{"agent two chars", AgentIdentity("a1"), "livedump://agent/a1", "agent/a1"},
		{"agent with dashes", AgentIdentity("web-01-ams"), "livedump://agent/web-01-ams", "agent/web-01-ams"},
		{"agent 64 chars", AgentIdentity(strings.Repeat("a", 64)), "livedump://agent/" + strings.Repeat("a", 64), "agent/" + strings.Repeat("a", 64)},
		{"viewer", OperatorIdentity(RoleViewer, "alice"), "livedump://operator/viewer/alice", "operator/viewer/alice"},
		{"operator", OperatorIdentity(RoleOperator, "Bob.Smith_2"), "livedump://operator/operator/Bob.Smith_2", "operator/operator/Bob.Smith_2"},
		{"admin email", OperatorIdentity(RoleAdmin, "carol@example.com"), "livedump://operator/admin/carol@example.com", "operator/admin/carol@example.com"},
		{"admin one char", OperatorIdentity(RoleAdmin, "x"), "livedump://operator/admin/x", "operator/admin/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.id.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			u := tt.id.URI()
			if got := u.String(); got != tt.uri {
				t.Errorf("URI() = %q, want %q", got, tt.uri)
			}
			if got := tt.id.String(); got != tt.display {
				t.Errorf("String() = %q, want %q", got, tt.display)
			}
			// Parse the struct directly and through its string form.
			for _, in := range []*url.URL{u, mustParseURL(t, u.String()), mustParseURL(t, tt.uri)} {
				got, err := ParseIdentityURI(in)
				if err != nil {
					t.Fatalf("ParseIdentityURI(%q): %v", in, err)
				}
				if got != tt.id {
					t.Errorf("ParseIdentityURI(%q) = %+v, want %+v", in, got, tt.id)
				}
			}
		})
	}
}

func TestParseIdentityURIRejects(t *testing.T) {
	tests := []struct {
		name string
		uri  string
	}{
		{"wrong scheme", "https://agent/abcd"},
		{"spiffe scheme", "spiffe://agent/abcd"},
		{"no scheme", "//agent/abcd"},
		{"opaque", "livedump:agent/abcd"},
		{"unknown host", "livedump://robot/abcd"},
		{"empty host", "livedump:///abcd"},
		{"agent extra segment", "livedump://agent/abcd/efgh"},
		{"agent trailing slash", "livedump://agent/abcd/"},
		{"agent double slash", "livedump://agent//abcd"},
		{"agent dot dot", "livedump://agent/../x"},
		{"agent escaped slash", "livedump://agent/ab%2Fcd"},
		{"agent no path", "livedump://agent"},
		{"agent empty id", "livedump://agent/"},
		{"agent uppercase", "livedump://agent/ABCD"},
		{"agent mixed case", "livedump://agent/abCd"},
		{"agent one char", "livedump://agent/a"},
		{"agent 65 chars", "livedump://agent/" + strings.Repeat("a", 65)},
		{"agent leading dash", "livedump://agent/-abc"},
		{"agent trailing dash", "livedump://agent/abc-"},
		{"agent underscore", "livedump://agent/ab_cd"},
		{"agent dot", "livedump://agent/ab.cd"},
		{"agent space", "livedump://agent/ab%20cd"},
		{"agent newline", "livedump://agent/ab%0Acd"},
		{"agent nul", "livedump://agent/ab%00cd"},
		{"agent port", "livedump://agent:443/abcd"},
		{"agent empty port", "livedump://agent:/abcd"},
		{"agent query", "livedump://agent/abcd?x=1"},
		{"agent fragment", "livedump://agent/abcd#frag"},
		{"agent userinfo", "livedump://user@agent/abcd"},
		{"agent userinfo password", "livedump://user:pw@agent/abcd"},
		{"operator missing name", "livedump://operator/admin"},
		{"operator empty name", "livedump://operator/admin/"},
		{"operator extra segment", "livedump://operator/admin/alice/x"},
		{"operator bad role", "livedump://operator/root/alice"},
		{"operator uppercase role", "livedump://operator/Admin/alice"},
		{"operator empty role", "livedump://operator//alice"},
		{"operator name leading dot", "livedump://operator/admin/.alice"},
		{"operator name dot dot", "livedump://operator/admin/.."},
		{"operator name 65 chars", "livedump://operator/admin/" + strings.Repeat("a", 65)},
		{"operator name space", "livedump://operator/admin/al%20ice"},
		{"operator port", "livedump://operator:1/admin/alice"},
		{"operator query", "livedump://operator/admin/alice?role=admin"},
		{"operator userinfo", "livedump://admin@operator/viewer/alice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := url.Parse(tt.uri)
			if err != nil {
				return // not even a URL: nothing can reach ParseIdentityURI
			}
			if id, err := ParseIdentityURI(u); err == nil {
				t.Fatalf("ParseIdentityURI(%q) = %+v, want error", tt.uri, id)
			}
		})
	}
}

// Hand-built URLs that url.Parse would never produce must be rejected too:
// certificates carry URIs parsed by crypto/x509, but callers may build them.
func TestParseIdentityURIRejectsStructs(t *testing.T) {
	tests := []struct {
		name string
		u    *url.URL
	}{
		{"user", &url.URL{Scheme: Scheme, User: url.User("x"), Host: "agent", Path: "/abcd"}},
		{"query", &url.URL{Scheme: Scheme, Host: "agent", Path: "/abcd", RawQuery: "a"}},
		{"fragment", &url.URL{Scheme: Scheme, Host: "agent", Path: "/abcd", Fragment: "f"}},
		{"port", &url.URL{Scheme: Scheme, Host: "agent:1", Path: "/abcd"}},
		{"scheme case sensitive on structs", &url.URL{Scheme: "LiveDump", Host: "agent", Path: "/abcd"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if id, err := ParseIdentityURI(tt.u); err == nil {
				t.Fatalf("ParseIdentityURI(%#v) = %+v, want error", tt.u, id)
			}
		})
	}
}

func TestValidateAgentID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"ab", true},
		{"0123456789abcdef", true},
		{"a-b", true},
		{"a--b", true},
		{strings.Repeat("z", 64), true},
		{"", false},
		{"a", false},
		{strings.Repeat("z", 65), false},
		{"../x", false},
		{"..", false},
		{"a/b", false},
		{"a\\b", false},
		{"ABCD", false},
		{"abcD", false},
		{"-ab", false},
		{"ab-", false},
		{"ab cd", false},
		{"ab\n", false},
		{"ab\x00", false},
		{"äb", false},
	}
	for _, tt := range tests {
		err := ValidateAgentID(tt.id)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateAgentID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
		}
	}
}

func TestValidateOperatorName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"Alice", true},
		{"alice@example.com", true},
		{"a.b_c-d", true},
		{"9lives", true},
		{strings.Repeat("n", 64), true},
		{strings.Repeat("n", 65), false},
		{"", false},
		{".alice", false},
		{"@alice", false},
		{"-alice", false},
		{"_alice", false},
		{"al/ice", false},
		{"al ice", false},
		{"alice\n", false},
		{"álice", false},
	}
	for _, tt := range tests {
		err := ValidateOperatorName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateOperatorName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestIdentityValidate(t *testing.T) {
	tests := []struct {
		name string
		id   Identity
		ok   bool
	}{
		{"zero", Identity{}, false},
		{"unknown kind", Identity{Kind: 7, AgentID: "abcd"}, false},
		{"agent", AgentIdentity("abcd"), true},
		{"agent bad id", AgentIdentity("ABCD"), false},
		{"operator", OperatorIdentity(RoleAdmin, "root"), true},
		{"operator no role", OperatorIdentity("", "root"), false},
		{"operator bad role", OperatorIdentity("superuser", "root"), false},
		{"operator bad name", OperatorIdentity(RoleViewer, "a/b"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.id.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate(%+v) = %v, want ok=%v", tt.id, err, tt.ok)
			}
		})
	}
	if got := (Identity{}).String(); got != "anonymous" {
		t.Errorf("zero Identity String() = %q, want anonymous", got)
	}
	if u := (Identity{}).URI(); u != nil {
		t.Errorf("zero Identity URI() = %v, want nil", u)
	}
}

func TestIdentityFromCert(t *testing.T) {
	agent := AgentIdentity("abcd")
	op := OperatorIdentity(RoleOperator, "alice")
	other := mustParseURL(t, "spiffe://example.org/ns/x")
	https := mustParseURL(t, "https://example.org/agent/abcd")
	tests := []struct {
		name    string
		uris    []*url.URL
		want    Identity
		wantErr string
	}{
		{"none", nil, Identity{}, "no livedump:// URI SAN"},
		{"only foreign", []*url.URL{other, https}, Identity{}, "no livedump:// URI SAN"},
		{"agent", []*url.URL{agent.URI()}, agent, ""},
		{"operator", []*url.URL{op.URI()}, op, ""},
		{"agent among foreign", []*url.URL{other, agent.URI(), https}, agent, ""},
		{"two identities", []*url.URL{agent.URI(), op.URI()}, Identity{}, "2 livedump:// URI SANs"},
		{"same identity twice", []*url.URL{agent.URI(), agent.URI()}, Identity{}, "want exactly one"},
		{"one invalid", []*url.URL{mustParseURL(t, "livedump://agent/../x")}, Identity{}, "identity uri"},
		{"valid plus invalid", []*url.URL{agent.URI(), mustParseURL(t, "livedump://robot/x")}, Identity{}, "want exactly one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert := &x509.Certificate{Subject: pkix.Name{CommonName: "test"}, URIs: tt.uris}
			got, err := IdentityFromCert(cert)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("IdentityFromCert = %+v, want error containing %q", got, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %q does not contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("IdentityFromCert: %v", err)
			}
			if got != tt.want {
				t.Errorf("IdentityFromCert = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// IdentityFromCert must work on a real certificate parsed from DER, with the
// identity put there by SignClient.
func TestIdentityFromSignedCert(t *testing.T) {
	ca := newTestCA(t)
	for _, id := range []Identity{AgentIdentity("abcd"), OperatorIdentity(RoleAdmin, "root@example.com")} {
		cert, err := ca.SignClient(testCSR(t), id, testNow, 24*time.Hour)
		if err != nil {
			t.Fatalf("SignClient(%v): %v", id, err)
		}
		reparsed, err := x509.ParseCertificate(cert.Raw)
		if err != nil {
			t.Fatal(err)
		}
		got, err := IdentityFromCert(reparsed)
		if err != nil {
			t.Fatalf("IdentityFromCert(%v): %v", id, err)
		}
		if got != id {
			t.Errorf("IdentityFromCert = %+v, want %+v", got, id)
		}
	}
}

func TestParseRole(t *testing.T) {
	for _, s := range []string{"viewer", "operator", "admin"} {
		r, err := ParseRole(s)
		if err != nil || string(r) != s {
			t.Errorf("ParseRole(%q) = %q, %v", s, r, err)
		}
	}
	for _, s := range []string{"", "Admin", "ADMIN", "root", "admin ", " viewer"} {
		if r, err := ParseRole(s); err == nil {
			t.Errorf("ParseRole(%q) = %q, want error", s, r)
		}
	}
}

func TestRoleAllows(t *testing.T) {
	roles := []Role{RoleViewer, RoleOperator, RoleAdmin}
	want := map[Role]map[Role]bool{
		RoleViewer:   {RoleViewer: true, RoleOperator: false, RoleAdmin: false},
		RoleOperator: {RoleViewer: true, RoleOperator: true, RoleAdmin: false},
		RoleAdmin:    {RoleViewer: true, RoleOperator: true, RoleAdmin: true},
		"":           {RoleViewer: false, RoleOperator: false, RoleAdmin: false},
		"root":       {RoleViewer: false, RoleOperator: false, RoleAdmin: false},
		"Admin":      {RoleViewer: false, RoleOperator: false, RoleAdmin: false},
	}
	for have, row := range want {
		for _, need := range roles {
			if got := have.Allows(need); got != row[need] {
				t.Errorf("Role(%q).Allows(%q) = %v, want %v", have, need, got, row[need])
			}
		}
	}
}
