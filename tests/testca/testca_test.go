package testca

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"github.com/livedump/livedump/internal/pki"
)

func TestIssuedIdentities(t *testing.T) {
	ca := New(t, Options{})
	tests := []struct {
		name  string
		cert  *tls.Certificate
		want  pki.Identity
		usage x509.ExtKeyUsage
	}{
		{"agent", ca.Agent(t, "0011223344556677"), pki.AgentIdentity("0011223344556677"), x509.ExtKeyUsageClientAuth},
		{"operator", ca.Operator(t, pki.RoleViewer, "alice"), pki.OperatorIdentity(pki.RoleViewer, "alice"), x509.ExtKeyUsageClientAuth},
		{"client", ca.Client(t, pki.OperatorIdentity(pki.RoleAdmin, "root")), pki.OperatorIdentity(pki.RoleAdmin, "root"), x509.ExtKeyUsageClientAuth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := pki.IdentityFromCert(tt.cert.Leaf)
			if err != nil || id != tt.want {
				t.Fatalf("identity %v, %v; want %v", id, err, tt.want)
			}
			if _, err := tt.cert.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{tt.usage}}); err != nil {
				t.Fatalf("does not chain to the CA: %v", err)
			}
			if !Key(tt.cert).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(tt.cert.Leaf.PublicKey) {
				t.Fatal("key does not match the certificate")
			}
			if life := tt.cert.Leaf.NotAfter.Sub(pki.IssuedAt(tt.cert.Leaf)); life != DefaultCertTTL {
				t.Fatalf("valid for %v, want %v", life, DefaultCertTTL)
			}
		})
	}
}

func TestServerNames(t *testing.T) {
	ca := New(t, Options{})
	def := ca.Server(t)
	if len(def.Leaf.IPAddresses) != 1 || !def.Leaf.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) || len(def.Leaf.DNSNames) != 0 {
		t.Fatalf("default server names: %v %v", def.Leaf.IPAddresses, def.Leaf.DNSNames)
	}
	named := ca.Server(t, "localhost", "::1")
	for _, host := range []string{"localhost", "::1"} {
		if _, err := named.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: host}); err != nil {
			t.Errorf("%s: %v", host, err)
		}
	}
	if _, err := named.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "127.0.0.1"}); err == nil {
		t.Error("server certificate for localhost, ::1 also valid for 127.0.0.1")
	}
}

// A fixed Now pins the CA and every certificate to it; ClientTTL sets the
// life.
func TestFixedTime(t *testing.T) {
	start := time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC)
	ca := New(t, Options{Name: "pinned", Now: start, TTL: 10 * 365 * 24 * time.Hour})
	if ca.Cert.Subject.CommonName != "pinned" {
		t.Errorf("CA name %q", ca.Cert.Subject.CommonName)
	}
	leaf := ca.ClientTTL(t, pki.AgentIdentity("abcd"), 30*time.Minute).Leaf
	if got := pki.IssuedAt(leaf); !got.Equal(start) {
		t.Errorf("issued at %v, want %v", got, start)
	}
	if !leaf.NotAfter.Equal(start.Add(30 * time.Minute)) {
		t.Errorf("expires %v, want %v", leaf.NotAfter, start.Add(30*time.Minute))
	}
}

// Certificates from Wrap chain to the wrapped CA; from another CA they do not.
func TestWrapAndForeignCA(t *testing.T) {
	base := Must(Options{})
	cert := Wrap(base.CA).Agent(t, "beef")
	if err := cert.Leaf.CheckSignatureFrom(base.Cert); err != nil {
		t.Fatalf("wrapped CA: %v", err)
	}
	other := New(t, Options{Name: "other"})
	if err := other.Agent(t, "beef").Leaf.CheckSignatureFrom(base.Cert); err == nil {
		t.Fatal("a foreign CA's certificate verified")
	}
}

// ServerTLS and ClientTLS complete a mutual TLS handshake, and the server
// sees the client's identity.
func TestHandshake(t *testing.T) {
	ca := New(t, Options{})
	srv := ca.ServerTLS(ca.Server(t), tls.RequireAndVerifyClientCert)
	cli := ca.ClientTLS("127.0.0.1", ca.Operator(t, pki.RoleAdmin, "root"))
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	done := make(chan error, 1)
	s := tls.Server(a, srv)
	go func() { done <- s.Handshake() }()
	if err := tls.Client(b, cli).Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	peer := s.ConnectionState().PeerCertificates
	if id, err := pki.IdentityFromCert(peer[0]); err != nil || id != pki.OperatorIdentity(pki.RoleAdmin, "root") {
		t.Fatalf("server saw %v, %v", id, err)
	}
	if cfg := ca.ClientTLS("x", nil); len(cfg.Certificates) != 0 {
		t.Fatal("ClientTLS without a certificate presents one")
	}
}
