package enroll

import (
	"context"
	"crypto"
	"errors"
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlite"
	"github.com/livedump/livedump/internal/pki"
	"github.com/livedump/livedump/tests/testca"
)

// start is whole seconds: certificate times have second precision.
var start = time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)

type fixture struct {
	e     *Enroller
	st    *sqlite.Store
	ca    *pki.CA
	clock *clockwork.FakeClock
}

func newFixture(t *testing.T, certTTL time.Duration) *fixture {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "livedump.db"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	ca := testca.New(t, testca.Options{Now: start, TTL: 10 * 365 * 24 * time.Hour}).CA
	clock := clockwork.NewFakeClockAt(start)
	return &fixture{
		e:     New(Config{Store: st, CA: ca, Clock: clock, CertTTL: certTTL}),
		st:    st,
		ca:    ca,
		clock: clock,
	}
}

func newCSR(t *testing.T) []byte {
	t.Helper()
	_, der := testca.KeyCSR(t)
	return der
}

func (f *fixture) token(t *testing.T, req TokenRequest) (store.Token, string) {
	t.Helper()
	tok, full, err := f.e.CreateToken(context.Background(), req)
	if err != nil {
		t.Fatalf("CreateToken(%+v): %v", req, err)
	}
	return tok, full
}

func (f *fixture) usesLeft(t *testing.T, id string) int {
	t.Helper()
	toks, err := f.st.ListTokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range toks {
		if tk.ID == id {
			return tk.UsesLeft
		}
	}
	t.Fatalf("token %s not in store", id)
	return 0
}

func wantInvalid(t *testing.T, err error, field string) {
	t.Helper()
	var ia *InvalidArgumentError
	if !errors.As(err, &ia) {
		t.Fatalf("error %v (%T) is not an InvalidArgumentError", err, err)
	}
	if ia.Field != field {
		t.Errorf("InvalidArgumentError.Field = %q, want %q (%v)", ia.Field, field, err)
	}
	if !strings.HasPrefix(err.Error(), field+": ") {
		t.Errorf("error %q does not start with the field", err)
	}
	if errors.Is(err, ErrDenied) {
		t.Errorf("invalid argument %v also reports ErrDenied", err)
	}
}

func TestNewDefaults(t *testing.T) {
	for _, ttl := range []time.Duration{0, -time.Hour} {
		e := New(Config{CertTTL: ttl})
		if e.CertTTL() != DefaultCertTTL {
			t.Errorf("CertTTL %v -> %v, want %v", ttl, e.CertTTL(), DefaultCertTTL)
		}
		if e.cfg.Clock == nil {
			t.Error("no default clock")
		}
	}
	if e := New(Config{CertTTL: time.Hour}); e.CertTTL() != time.Hour {
		t.Errorf("CertTTL = %v, want 1h", e.CertTTL())
	}
}

func TestCreateToken(t *testing.T) {
	tests := []struct {
		name        string
		req         TokenRequest
		wantField   string // "" = success
		wantUses    int
		wantTTL     time.Duration
		errContains string
	}{
		{"defaults", TokenRequest{}, "", 1, DefaultTokenTTL, ""},
		{"explicit", TokenRequest{Uses: 5, TTL: 2 * time.Hour}, "", 5, 2 * time.Hour, ""},
		{"max uses", TokenRequest{Uses: MaxTokenUses}, "", MaxTokenUses, DefaultTokenTTL, ""},
		{"min ttl", TokenRequest{TTL: MinTokenTTL}, "", 1, MinTokenTTL, ""},
		{"max ttl", TokenRequest{TTL: MaxTokenTTL}, "", 1, MaxTokenTTL, ""},
		{"with labels", TokenRequest{Labels: map[string]string{"site": "ams"}}, "", 1, DefaultTokenTTL, ""},
		{"negative uses", TokenRequest{Uses: -1}, "uses", 0, 0, "-1"},
		{"too many uses", TokenRequest{Uses: MaxTokenUses + 1}, "uses", 0, 0, "100001"},
		{"negative ttl", TokenRequest{TTL: -time.Hour}, "ttl", 0, 0, ""},
		{"ttl too short", TokenRequest{TTL: MinTokenTTL - time.Second}, "ttl", 0, 0, "59s"},
		{"ttl too long", TokenRequest{TTL: MaxTokenTTL + time.Second}, "ttl", 0, 0, ""},
		{"bad label key", TokenRequest{Labels: map[string]string{"bad key": "x"}}, "labels", 0, 0, "bad key"},
		{"bad label value", TokenRequest{Labels: map[string]string{"site": "a b"}}, "labels", 0, 0, "site"},
		{"built-in label", TokenRequest{Labels: map[string]string{"hostname": "x"}}, "labels", 0, 0, "hostname"},
		{"built-in os.build", TokenRequest{Labels: map[string]string{"os.build": "1"}}, "labels", 0, 0, "os.build"},
	}
	f := newFixture(t, 0)
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			req.CreatedBy = "operator/admin/root"
			tok, full, err := f.e.CreateToken(ctx, req)
			if tt.wantField != "" {
				wantInvalid(t, err, tt.wantField)
				if !strings.Contains(err.Error(), tt.errContains) {
					t.Errorf("error %q does not contain %q", err, tt.errContains)
				}
				if full != "" || tok.ID != "" {
					t.Errorf("error returned token %q / %+v", full, tok)
				}
				return
			}
			if err != nil {
				t.Fatalf("CreateToken: %v", err)
			}
			id, secret, err := ParseToken(full)
			if err != nil {
				t.Fatalf("full token %q does not parse: %v", full, err)
			}
			if id != tok.ID {
				t.Errorf("token id %q, full token names %q", tok.ID, id)
			}
			if string(tok.SecretHash) != string(HashSecret(secret)) {
				t.Error("SecretHash is not the hash of the secret in the full token")
			}
			if strings.Contains(string(tok.SecretHash), secret) {
				t.Error("secret stored in the clear")
			}
			if tok.Uses != tt.wantUses || tok.UsesLeft != tt.wantUses {
				t.Errorf("Uses/UsesLeft = %d/%d, want %d", tok.Uses, tok.UsesLeft, tt.wantUses)
			}
			if !tok.Created.Equal(start) {
				t.Errorf("Created = %v, want %v (fake clock)", tok.Created, start)
			}
			if got := tok.Expires.Sub(tok.Created); got != tt.wantTTL {
				t.Errorf("TTL = %v, want %v", got, tt.wantTTL)
			}
			if tok.CreatedBy != req.CreatedBy {
				t.Errorf("CreatedBy = %q", tok.CreatedBy)
			}
			if tok.Labels == nil {
				t.Error("Labels is nil, want empty map")
			}
			wantLabels := tt.req.Labels
			if wantLabels == nil {
				wantLabels = map[string]string{}
			}
			if !maps.Equal(tok.Labels, wantLabels) {
				t.Errorf("Labels = %v, want %v", tok.Labels, wantLabels)
			}
			// And it is in the store as returned.
			toks, err := f.st.ListTokens(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var stored *store.Token
			for i := range toks {
				if toks[i].ID == tok.ID {
					stored = &toks[i]
				}
			}
			if stored == nil {
				t.Fatal("token not stored")
			}
			if stored.UsesLeft != tt.wantUses || !stored.Expires.Equal(tok.Expires) || !maps.Equal(stored.Labels, wantLabels) || string(stored.SecretHash) != string(tok.SecretHash) {
				t.Errorf("stored token %+v differs from returned %+v", *stored, tok)
			}
		})
	}
}

func TestCreateTokenClonesLabels(t *testing.T) {
	f := newFixture(t, 0)
	labels := map[string]string{"site": "ams"}
	tok, _ := f.token(t, TokenRequest{Labels: labels})
	labels["site"] = "fra"
	labels["extra"] = "x"
	if !maps.Equal(tok.Labels, map[string]string{"site": "ams"}) {
		t.Errorf("token labels alias the request map: %v", tok.Labels)
	}
}

func TestEnroll(t *testing.T) {
	const certTTL = 7 * 24 * time.Hour
	f := newFixture(t, certTTL)
	ctx := context.Background()
	tok, full := f.token(t, TokenRequest{
		Uses:   2,
		Labels: map[string]string{"site": "ams", "role": "vdi"},
	})
	f.clock.Advance(10 * time.Minute)
	now := f.clock.Now()

	en, err := f.e.Enroll(ctx, EnrollRequest{
		Token:  full,
		CSR:    newCSR(t),
		Labels: map[string]string{"site": "fra", "rack": "r1"},
		Inventory: store.Agent{
			ID:           "chosen-by-agent", // must be ignored
			Hostname:     "web-01",
			OSBuild:      "22631",
			Arch:         "amd64",
			AgentVersion: "1.2.3",
		},
	})
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	if en.TokenID != tok.ID {
		t.Errorf("TokenID = %q, want %q", en.TokenID, tok.ID)
	}
	if err := pki.ValidateAgentID(en.AgentID); err != nil || en.AgentID == "chosen-by-agent" {
		t.Fatalf("AgentID %q: %v", en.AgentID, err)
	}

	// The certificate names the new agent and lives exactly CertTTL.
	cert := en.Cert
	id, err := pki.IdentityFromCert(cert)
	if err != nil {
		t.Fatalf("IdentityFromCert: %v", err)
	}
	if id != pki.AgentIdentity(en.AgentID) {
		t.Errorf("certificate identity %v, want agent/%s", id, en.AgentID)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "livedump://agent/"+en.AgentID {
		t.Errorf("URIs = %v", cert.URIs)
	}
	if got := cert.NotAfter.Sub(now); got != certTTL {
		t.Errorf("lifetime from now = %v, want %v", got, certTTL)
	}
	if err := cert.CheckSignatureFrom(f.ca.Cert); err != nil {
		t.Errorf("certificate not signed by the CA: %v", err)
	}

	// The stored agent: token labels override requested ones.
	a, err := f.st.GetAgent(ctx, en.AgentID)
	if err != nil {
		t.Fatalf("GetAgent: %v", err)
	}
	wantLabels := map[string]string{"site": "ams", "role": "vdi", "rack": "r1"}
	if !maps.Equal(a.Labels, wantLabels) {
		t.Errorf("labels = %v, want %v", a.Labels, wantLabels)
	}
	if a.Hostname != "web-01" || a.OSBuild != "22631" || a.Arch != "amd64" || a.AgentVersion != "1.2.3" {
		t.Errorf("inventory not stored: %+v", a)
	}
	if a.Revoked {
		t.Error("new agent is revoked")
	}
	if a.CertSerial != pki.SerialHex(cert) || !a.CertExpiry.Equal(cert.NotAfter) {
		t.Errorf("stored cert %s/%v, issued %s/%v", a.CertSerial, a.CertExpiry, pki.SerialHex(cert), cert.NotAfter)
	}
	if !a.FirstSeen.Equal(now) || !a.LastSeen.Equal(now) {
		t.Errorf("FirstSeen/LastSeen = %v/%v, want %v", a.FirstSeen, a.LastSeen, now)
	}
	if n := f.usesLeft(t, tok.ID); n != 1 {
		t.Errorf("uses left = %d, want 1", n)
	}

	// A second enrollment with the same token is a different agent.
	en2, err := f.e.Enroll(ctx, EnrollRequest{Token: full, CSR: newCSR(t)})
	if err != nil {
		t.Fatalf("second Enroll: %v", err)
	}
	if en2.AgentID == en.AgentID {
		t.Error("two enrollments got the same agent ID")
	}
	a2, err := f.st.GetAgent(ctx, en2.AgentID)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(a2.Labels, map[string]string{"site": "ams", "role": "vdi"}) {
		t.Errorf("labels without request labels = %v", a2.Labels)
	}
}

func TestEnrollTokenLabelsDoNotLeakIntoRequest(t *testing.T) {
	f := newFixture(t, 0)
	_, full := f.token(t, TokenRequest{Labels: map[string]string{"site": "ams"}})
	req := map[string]string{"rack": "r1"}
	if _, err := f.e.Enroll(context.Background(), EnrollRequest{Token: full, CSR: newCSR(t), Labels: req}); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(req, map[string]string{"rack": "r1"}) {
		t.Errorf("Enroll modified the caller's label map: %v", req)
	}
}

func TestEnrollDenied(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		setup func(t *testing.T, f *fixture) string // returns the token to use
		cause error                                 // wrapped store error
	}{
		{"expired exactly at expiry", func(t *testing.T, f *fixture) string {
			_, full := f.token(t, TokenRequest{TTL: time.Hour})
			f.clock.Advance(time.Hour)
			return full
		}, store.ErrTokenExpired},
		{"expired long ago", func(t *testing.T, f *fixture) string {
			_, full := f.token(t, TokenRequest{TTL: time.Hour})
			f.clock.Advance(48 * time.Hour)
			return full
		}, store.ErrTokenExpired},
		{"exhausted", func(t *testing.T, f *fixture) string {
			_, full := f.token(t, TokenRequest{Uses: 1})
			if _, err := f.e.Enroll(ctx, EnrollRequest{Token: full, CSR: newCSR(t)}); err != nil {
				t.Fatalf("first Enroll: %v", err)
			}
			return full
		}, store.ErrTokenExhausted},
		{"revoked", func(t *testing.T, f *fixture) string {
			tok, full := f.token(t, TokenRequest{})
			if _, err := f.st.RevokeToken(ctx, tok.ID); err != nil {
				t.Fatal(err)
			}
			return full
		}, store.ErrTokenRevoked},
		{"unknown id", func(t *testing.T, f *fixture) string {
			return "ldt_" + goodID + "_" + goodSecret
		}, store.ErrNotFound},
		{"wrong secret", func(t *testing.T, f *fixture) string {
			tok, _ := f.token(t, TokenRequest{})
			return "ldt_" + tok.ID + "_" + goodSecret
		}, store.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // each case has its own store and clock
			f := newFixture(t, 0)
			tok := tt.setup(t, f)
			agentsBefore, err := f.st.ListAgents(ctx)
			if err != nil {
				t.Fatal(err)
			}
			en, err := f.e.Enroll(ctx, EnrollRequest{Token: tok, CSR: newCSR(t)})
			if err == nil {
				t.Fatalf("Enroll = %+v, want denied", en)
			}
			if !errors.Is(err, ErrDenied) {
				t.Errorf("error %v does not wrap ErrDenied", err)
			}
			if !errors.Is(err, tt.cause) {
				t.Errorf("error %v does not wrap %v (needed for the audit log)", err, tt.cause)
			}
			var ia *InvalidArgumentError
			if errors.As(err, &ia) {
				t.Errorf("denied enrollment reported as invalid argument %v", ia)
			}
			if strings.Contains(err.Error(), tok[len("ldt_")+9:]) {
				t.Errorf("error %q contains the token secret", err)
			}
			if en.Cert != nil || en.AgentID != "" {
				t.Errorf("denied enrollment returned %+v", en)
			}
			agents, err := f.st.ListAgents(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(agents) != len(agentsBefore) {
				t.Errorf("denied enrollment created an agent: %d -> %d", len(agentsBefore), len(agents))
			}
		})
	}
}

func TestEnrollBeforeExpiry(t *testing.T) {
	f := newFixture(t, 0)
	_, full := f.token(t, TokenRequest{TTL: time.Hour})
	f.clock.Advance(time.Hour - time.Second)
	if _, err := f.e.Enroll(context.Background(), EnrollRequest{Token: full, CSR: newCSR(t)}); err != nil {
		t.Fatalf("Enroll one second before expiry: %v", err)
	}
}

func TestEnrollInvalidArguments(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 0)
	tok, full := f.token(t, TokenRequest{Uses: 5})
	badSig := newCSR(t)
	badSig[len(badSig)-1] ^= 0xff
	tests := []struct {
		name  string
		req   EnrollRequest
		field string
	}{
		{"malformed token", EnrollRequest{Token: "ldt_nope", CSR: newCSR(t)}, "token"},
		{"empty token", EnrollRequest{CSR: newCSR(t)}, "token"},
		{"no csr", EnrollRequest{Token: full}, "csr"},
		{"garbage csr", EnrollRequest{Token: full, CSR: []byte("csr")}, "csr"},
		{"bad csr signature", EnrollRequest{Token: full, CSR: badSig}, "csr"},
		{"bad label", EnrollRequest{Token: full, CSR: newCSR(t), Labels: map[string]string{"bad key": "x"}}, "labels"},
		{"built-in label", EnrollRequest{Token: full, CSR: newCSR(t), Labels: map[string]string{"hostname": "spoofed"}}, "labels"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.e.Enroll(ctx, tt.req)
			wantInvalid(t, err, tt.field)
		})
	}
	// None of the rejected requests consumed a use of the token.
	if n := f.usesLeft(t, tok.ID); n != 5 {
		t.Errorf("uses left = %d after invalid requests, want 5", n)
	}
}

func TestRenew(t *testing.T) {
	const certTTL = 24 * time.Hour
	ctx := context.Background()
	f := newFixture(t, certTTL)
	_, full := f.token(t, TokenRequest{})
	en, err := f.e.Enroll(ctx, EnrollRequest{Token: full, CSR: newCSR(t)})
	if err != nil {
		t.Fatal(err)
	}

	f.clock.Advance(16 * time.Hour)
	now := f.clock.Now()
	key, csr := testca.KeyCSR(t)
	cert, err := f.e.Renew(ctx, en.AgentID, csr)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if id, err := pki.IdentityFromCert(cert); err != nil || id != pki.AgentIdentity(en.AgentID) {
		t.Errorf("renewed identity %v, %v", id, err)
	}
	if !cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
		t.Error("renewed certificate is not for the new key")
	}
	if got := cert.NotAfter.Sub(now); got != certTTL {
		t.Errorf("renewed lifetime = %v, want %v", got, certTTL)
	}
	if pki.SerialHex(cert) == pki.SerialHex(en.Cert) {
		t.Error("renewal reused the serial")
	}
	a, err := f.st.GetAgent(ctx, en.AgentID)
	if err != nil {
		t.Fatal(err)
	}
	if a.CertSerial != pki.SerialHex(cert) {
		t.Errorf("stored serial = %s, want renewed %s", a.CertSerial, pki.SerialHex(cert))
	}
	if !a.CertExpiry.Equal(cert.NotAfter) {
		t.Errorf("stored expiry = %v, want %v", a.CertExpiry, cert.NotAfter)
	}
	// The replaced certificate is the previous one, for the default grace.
	if a.PrevSerial != pki.SerialHex(en.Cert) || !a.PrevUntil.Equal(now.Add(DefaultRenewGrace).Truncate(time.Millisecond)) {
		t.Errorf("previous certificate = %s until %v, want %s until %v", a.PrevSerial, a.PrevUntil, pki.SerialHex(en.Cert), now.Add(DefaultRenewGrace))
	}

	// Invalid CSR: invalid argument, nothing stored.
	_, err = f.e.Renew(ctx, en.AgentID, []byte("junk"))
	wantInvalid(t, err, "csr")
	if a2, _ := f.st.GetAgent(ctx, en.AgentID); a2.CertSerial != a.CertSerial {
		t.Error("failed renewal changed the stored serial")
	}

	// Unknown agent.
	if _, err := f.e.Renew(ctx, "ffffffffffffffff", newCSR(t)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Renew of unknown agent = %v, want ErrNotFound", err)
	}

	// Revoked agent: denied, stored serial untouched.
	if _, err := f.st.RevokeAgent(ctx, en.AgentID, f.clock.Now()); err != nil {
		t.Fatal(err)
	}
	got, err := f.e.Renew(ctx, en.AgentID, newCSR(t))
	if !errors.Is(err, ErrDenied) {
		t.Fatalf("Renew of revoked agent = %v, %v; want ErrDenied", got, err)
	}
	if got != nil {
		t.Error("revoked renewal returned a certificate")
	}
	if a3, _ := f.st.GetAgent(ctx, en.AgentID); a3.CertSerial != a.CertSerial {
		t.Error("denied renewal changed the stored serial")
	}
}

func TestRenewGrace(t *testing.T) {
	for _, tc := range []struct {
		name  string
		grace time.Duration
		want  time.Duration
	}{
		{"default", 0, DefaultRenewGrace},
		{"configured", time.Second, time.Second},
		{"none", -1, 0},
		{"capped", 1000 * time.Hour, MaxRenewGrace},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, time.Hour)
			e := New(Config{Store: f.st, CA: f.e.cfg.CA, Clock: f.clock, RenewGrace: tc.grace})
			if got := e.RenewGrace(); got != tc.want {
				t.Fatalf("RenewGrace() = %v, want %v", got, tc.want)
			}
			_, full := f.token(t, TokenRequest{})
			en, err := e.Enroll(ctx, EnrollRequest{Token: full, CSR: newCSR(t)})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.Renew(ctx, en.AgentID, newCSR(t)); err != nil {
				t.Fatal(err)
			}
			a, err := f.st.GetAgent(ctx, en.AgentID)
			if err != nil {
				t.Fatal(err)
			}
			var want time.Time
			if tc.want > 0 {
				want = f.clock.Now().Add(tc.want).UTC().Truncate(time.Millisecond)
			}
			if !a.PrevUntil.Equal(want) {
				t.Errorf("PrevUntil = %v, want %v", a.PrevUntil, want)
			}
		})
	}
}
