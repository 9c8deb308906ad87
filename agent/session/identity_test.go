package session

import (
	"context"
	"crypto"
	"crypto/x509"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/testca"
)

// start is whole seconds: certificate times have second precision.
var start = time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC)

var testCA = testca.Must(testca.Options{Now: start, TTL: 10 * 365 * 24 * time.Hour})

// issue returns a fresh key and a certificate for id signed by testCA.
func issue(t *testing.T, id pki.Identity, ttl time.Duration) (crypto.Signer, *x509.Certificate) {
	t.Helper()
	c := testCA.ClientTTL(t, id, ttl)
	return testca.Key(c), c.Leaf
}

func TestIdentitySaveLoad(t *testing.T) {
	dir := t.TempDir()
	key, leaf := issue(t, pki.AgentIdentity("0011223344556677"), 30*24*time.Hour)
	id := &Identity{AgentID: "0011223344556677", Key: key, Chain: []*x509.Certificate{leaf, testCA.Cert}}
	if err := id.Save(dir); err != nil {
		t.Fatalf("Save: %v", err)
	}
	path := filepath.Join(dir, IdentityFile)
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode().Perm(); m != 0o600 {
			t.Errorf("identity file mode = %v, want 0600", m)
		}
	}

	got, err := LoadIdentity(dir)
	if err != nil {
		t.Fatalf("LoadIdentity: %v", err)
	}
	if got == nil {
		t.Fatal("LoadIdentity returned nil after Save")
	}
	if got.AgentID != id.AgentID {
		t.Errorf("AgentID = %q, want %q", got.AgentID, id.AgentID)
	}
	if k, ok := got.Key.(interface{ Equal(crypto.PrivateKey) bool }); !ok || !k.Equal(key) {
		t.Error("loaded key differs")
	}
	if len(got.Chain) != 2 || !pki.SameCert(got.Chain[0], leaf) || !pki.SameCert(got.Chain[1], testCA.Cert) {
		t.Errorf("loaded chain has %d certs or wrong order", len(got.Chain))
	}
	if !pki.SameCert(got.Leaf(), leaf) {
		t.Error("Leaf() is not the agent certificate")
	}

	// Saving a renewed identity replaces the file atomically.
	key2, leaf2 := issue(t, pki.AgentIdentity("0011223344556677"), time.Hour)
	id2 := &Identity{AgentID: id.AgentID, Key: key2, Chain: []*x509.Certificate{leaf2}}
	if err := id2.Save(dir); err != nil {
		t.Fatal(err)
	}
	got, err = LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Chain) != 1 || !pki.SameCert(got.Leaf(), leaf2) {
		t.Error("renewed identity not loaded")
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("state dir holds %v, want only %s", names, IdentityFile)
	}
}

func TestLoadIdentityNotEnrolled(t *testing.T) {
	for name, dir := range map[string]string{
		"empty dir":   t.TempDir(),
		"missing dir": filepath.Join(t.TempDir(), "does", "not", "exist"),
	} {
		id, err := LoadIdentity(dir)
		if id != nil || err != nil {
			t.Errorf("%s: LoadIdentity = %v, %v; want nil, nil", name, id, err)
		}
	}
}

func TestLoadIdentityErrors(t *testing.T) {
	keyA, leafA := issue(t, pki.AgentIdentity("aaaa"), time.Hour)
	keyB, _ := issue(t, pki.AgentIdentity("bbbb"), time.Hour)
	opKey, opLeaf := issue(t, pki.OperatorIdentity(pki.RoleAdmin, "root"), time.Hour)
	pemOf := func(key crypto.Signer, certs ...*x509.Certificate) []byte {
		b, err := pki.EncodeKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return append(b, pki.EncodeCerts(certs...)...)
	}
	keyOnly, err := pki.EncodeKey(keyA)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		data    []byte
		wantErr string
	}{
		{"mismatched key", pemOf(keyB, leafA), "does not match"},
		{"CA cert first", pemOf(keyA, testCA.Cert, leafA), "does not match"},
		{"operator certificate", pemOf(opKey, opLeaf), "not an agent"},
		{"key only", keyOnly, "no certificate"},
		{"certificate only", pki.EncodeCerts(leafA), "PEM"},
		{"garbage", []byte("hello"), "PEM"},
		{"empty file", nil, "PEM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, IdentityFile), tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			id, err := LoadIdentity(dir)
			if err == nil {
				t.Fatalf("LoadIdentity = %+v, want error", id)
			}
			if id != nil {
				t.Error("LoadIdentity returned an identity with its error")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), IdentityFile) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestNewIdentity(t *testing.T) {
	key, leaf := issue(t, pki.AgentIdentity("cafe"), time.Hour)
	other, _ := issue(t, pki.AgentIdentity("beef"), time.Hour)
	tests := []struct {
		name  string
		key   crypto.Signer
		chain [][]byte
		ok    bool
	}{
		{"leaf", key, [][]byte{leaf.Raw}, true},
		{"leaf and CA", key, [][]byte{leaf.Raw, testCA.Cert.Raw}, true},
		{"empty chain", key, nil, false},
		{"garbage DER", key, [][]byte{[]byte("nope")}, false},
		{"bad intermediate", key, [][]byte{leaf.Raw, []byte("nope")}, false},
		{"wrong key", other, [][]byte{leaf.Raw}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := newIdentity(tt.key, tt.chain)
			if (err == nil) != tt.ok {
				t.Fatalf("newIdentity = %v, %v; want ok=%v", id, err, tt.ok)
			}
			if tt.ok && id.AgentID != "cafe" {
				t.Errorf("AgentID = %q, want cafe", id.AgentID)
			}
		})
	}
}

func TestRenewAt(t *testing.T) {
	for _, ttl := range []time.Duration{time.Hour, 30 * 24 * time.Hour, 90 * 24 * time.Hour} {
		key, leaf := issue(t, pki.AgentIdentity("abcd"), ttl)
		id := &Identity{AgentID: "abcd", Key: key, Chain: []*x509.Certificate{leaf}}
		life := leaf.NotAfter.Sub(leaf.NotBefore)
		want := leaf.NotBefore.Add(life * 2 / 3)
		if got := id.RenewAt(); !got.Equal(want) {
			t.Errorf("ttl %v: RenewAt = %v, want %v", ttl, got, want)
		}
		// Two thirds through, measured from both ends.
		if a, b := id.RenewAt().Sub(leaf.NotBefore), leaf.NotAfter.Sub(id.RenewAt()); a < 2*b-time.Second || a > 2*b+time.Second {
			t.Errorf("ttl %v: %v elapsed vs %v left at RenewAt, want 2:1", ttl, a, b)
		}
		if !id.RenewAt().After(start) || !id.RenewAt().Before(leaf.NotAfter) {
			t.Errorf("ttl %v: RenewAt %v outside the validity", ttl, id.RenewAt())
		}
	}
}

func TestTLSCertificate(t *testing.T) {
	key, leaf := issue(t, pki.AgentIdentity("abcd"), time.Hour)
	id := &Identity{AgentID: "abcd", Key: key, Chain: []*x509.Certificate{leaf, testCA.Cert}}
	c := id.TLSCertificate()
	if len(c.Certificate) != 2 || string(c.Certificate[0]) != string(leaf.Raw) || string(c.Certificate[1]) != string(testCA.Cert.Raw) {
		t.Errorf("TLS chain wrong: %d certs", len(c.Certificate))
	}
	if c.PrivateKey != key || c.Leaf != leaf {
		t.Error("TLS key or leaf wrong")
	}
}

func validConfig(t *testing.T) Config {
	return Config{
		Controllers: []string{"ctl-1.example.com:8443", "[2001:db8::1]:8443"},
		CAPool:      testCA.Pool(),
		StateDir:    t.TempDir(),
		Inventory: func(context.Context) (*livedumpv1.Inventory, error) {
			return &livedumpv1.Inventory{}, nil
		},
	}
}

func TestNewValidation(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{"no controllers", func(c *Config) { c.Controllers = nil }, "controllers"},
		{"empty controllers", func(c *Config) { c.Controllers = []string{} }, "controllers"},
		{"address without port", func(c *Config) { c.Controllers = []string{"ctl.example.com"} }, "ctl.example.com"},
		{"second address bad", func(c *Config) { c.Controllers = []string{"a:1", "b"} }, `"b"`},
		{"bare IPv6", func(c *Config) { c.Controllers = []string{"2001:db8::1"} }, "controllers"},
		{"empty address", func(c *Config) { c.Controllers = []string{""} }, "controllers"},
		{"no CA pool", func(c *Config) { c.CAPool = nil }, "ca"},
		{"no state dir", func(c *Config) { c.StateDir = "" }, "state_dir"},
		{"no inventory", func(c *Config) { c.Inventory = nil }, "Inventory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := validConfig(t)
			tt.mutate(&cfg)
			c, err := New(cfg)
			if err == nil {
				t.Fatalf("New = %v, want error", c)
			}
			if c != nil {
				t.Error("New returned a client with its error")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	c, err := New(validConfig(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if c.cfg.BackoffMin != DefaultBackoffMin || c.cfg.BackoffMax != DefaultBackoffMax {
		t.Errorf("backoff defaults %v..%v", c.cfg.BackoffMin, c.cfg.BackoffMax)
	}
	if c.cfg.Clock == nil || c.log == nil {
		t.Error("clock or logger default missing")
	}
	if c.AgentID() != "" || c.Identity() != nil {
		t.Error("new client already has an identity")
	}

	cfg := validConfig(t)
	cfg.BackoffMin, cfg.BackoffMax = -time.Second, -time.Second
	if c, err := New(cfg); err != nil || c.cfg.BackoffMin != DefaultBackoffMin || c.cfg.BackoffMax != DefaultBackoffMax {
		t.Errorf("negative backoff not defaulted: %v", err)
	}
	cfg.BackoffMin, cfg.BackoffMax = 2*time.Second, 5*time.Minute
	if c, err := New(cfg); err != nil || c.cfg.BackoffMin != 2*time.Second || c.cfg.BackoffMax != 5*time.Minute {
		t.Errorf("explicit backoff overridden: %v", err)
	}
}

func TestTLSConfigUsesCurrentIdentity(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := validConfig(t)
	cfg.Metrics = NewMetrics(reg)
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tc := c.tlsConfig("ctl-1.example.com:8443", true)
	if tc.ServerName != "ctl-1.example.com" || tc.RootCAs != cfg.CAPool || tc.MinVersion < 0x0304 {
		t.Errorf("tls config: server %q, min version %x", tc.ServerName, tc.MinVersion)
	}
	if tc.InsecureSkipVerify {
		t.Fatal("InsecureSkipVerify set")
	}
	if got, err := tc.GetClientCertificate(nil); err != nil || len(got.Certificate) != 0 {
		t.Errorf("before enrollment: %d certs, %v; want an empty certificate", len(got.Certificate), err)
	}

	for _, agent := range []string{"aaaa", "bbbb"} {
		key, leaf := issue(t, pki.AgentIdentity(agent), time.Hour)
		c.setIdentity(&Identity{AgentID: agent, Key: key, Chain: []*x509.Certificate{leaf}})
		got, err := tc.GetClientCertificate(nil)
		if err != nil || len(got.Certificate) != 1 || string(got.Certificate[0]) != string(leaf.Raw) {
			t.Errorf("after setIdentity(%s): handshake would not use the new certificate", agent)
		}
		if c.AgentID() != agent {
			t.Errorf("AgentID = %q, want %q", c.AgentID(), agent)
		}
		var m dto.Metric
		if err := cfg.Metrics.CertExpiry.Write(&m); err != nil {
			t.Fatal(err)
		}
		if got := m.GetGauge().GetValue(); got != float64(leaf.NotAfter.Unix()) {
			t.Errorf("cert expiry gauge = %v, want %v", got, leaf.NotAfter.Unix())
		}
	}

	if enroll := c.tlsConfig("[2001:db8::1]:8443", false); enroll.GetClientCertificate != nil || enroll.ServerName != "2001:db8::1" {
		t.Errorf("enrollment tls config: server %q, client cert callback set=%v", enroll.ServerName, enroll.GetClientCertificate != nil)
	}
}
