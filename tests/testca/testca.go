// Package testca is a certificate authority made at test time, and the one
// way tests issue certificates: agent, operator and server certificates and
// the TLS configurations that use them. It signs through internal/pki, as
// the controller does, so a test certificate is exactly what production
// issues. Nothing is written to disk and no key is committed.
package testca

import (
	"crypto"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/livedump/livedump/internal/pki"
)

// Defaults of Options.
const (
	DefaultName    = "test CA"
	DefaultTTL     = 24 * time.Hour
	DefaultCertTTL = time.Hour
)

// Options shape a CA made by New.
type Options struct {
	// Name is the CA's common name (default DefaultName).
	Name string
	// Now is when the CA and every certificate it issues begin; zero means
	// the time of each call.
	Now time.Time
	// TTL is the CA's life (default DefaultTTL).
	TTL time.Duration
}

// CA issues test certificates. It embeds the pki.CA it signs with, so a
// test can hand it (ca.CA) to code under test or read ca.Cert and ca.Pool().
type CA struct {
	*pki.CA
	now time.Time
}

// New makes a CA with opts, failing t if it cannot.
func New(t testing.TB, opts Options) *CA {
	t.Helper()
	ca, err := create(opts)
	if err != nil {
		t.Fatalf("test CA: %v", err)
	}
	return ca
}

// Must is New for a package-level CA shared by a package's tests; it
// panics if the CA cannot be made.
func Must(opts Options) *CA {
	ca, err := create(opts)
	if err != nil {
		panic("test CA: " + err.Error())
	}
	return ca
}

func create(opts Options) (*CA, error) {
	if opts.Name == "" {
		opts.Name = DefaultName
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultTTL
	}
	ca, err := pki.NewCA(opts.Name, at(opts.Now), opts.TTL)
	if err != nil {
		return nil, err
	}
	return &CA{CA: ca, now: opts.Now}, nil
}

// Wrap issues from an existing CA, such as a running controller's, with
// certificates that begin at the time of each call.
func Wrap(ca *pki.CA) *CA { return &CA{CA: ca} }

func at(now time.Time) time.Time {
	if now.IsZero() {
		return time.Now()
	}
	return now
}

// KeyCSR makes a fresh key and a certificate request for it, as an agent
// does before Enroll and Renew.
func KeyCSR(t testing.TB) (crypto.Signer, []byte) {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := pki.CreateCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

// Client issues a client certificate for id with a fresh key, valid for
// DefaultCertTTL, the way the controller signs an agent's or an operator's
// request.
func (c *CA) Client(t testing.TB, id pki.Identity) *tls.Certificate {
	t.Helper()
	return c.ClientTTL(t, id, DefaultCertTTL)
}

// ClientTTL is Client with a certificate valid for ttl.
func (c *CA) ClientTTL(t testing.TB, id pki.Identity, ttl time.Duration) *tls.Certificate {
	t.Helper()
	key, der := KeyCSR(t)
	csr, err := pki.ParseCSR(der)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := c.SignClient(csr, id, at(c.now), ttl)
	if err != nil {
		t.Fatalf("issue %s: %v", id, err)
	}
	return &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

// Agent issues an agent certificate for agentID.
func (c *CA) Agent(t testing.TB, agentID string) *tls.Certificate {
	t.Helper()
	return c.Client(t, pki.AgentIdentity(agentID))
}

// Operator issues an operator certificate of role for name.
func (c *CA) Operator(t testing.TB, role pki.Role, name string) *tls.Certificate {
	t.Helper()
	return c.Client(t, pki.OperatorIdentity(role, name))
}

// Server issues a server certificate for names (IP addresses or DNS names;
// default 127.0.0.1) with a fresh key, valid for DefaultCertTTL, as the
// controller issues its own.
func (c *CA) Server(t testing.TB, names ...string) *tls.Certificate {
	t.Helper()
	if len(names) == 0 {
		names = []string{"127.0.0.1"}
	}
	var dns []string
	var ips []net.IP
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, n)
		}
	}
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := c.SignServer(key.Public(), dns, ips, at(c.now), DefaultCertTTL)
	if err != nil {
		t.Fatalf("issue server certificate: %v", err)
	}
	return &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

// ServerTLS is a TLS 1.3 server configuration presenting cert that checks
// client certificates against the CA as clientAuth says.
func (c *CA) ServerTLS(cert *tls.Certificate, clientAuth tls.ClientAuthType) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{*cert},
		ClientAuth:   clientAuth,
		ClientCAs:    c.Pool(),
	}
}

// ClientTLS is a TLS 1.3 client configuration that trusts only the CA,
// expects serverName, and presents cert unless it is nil.
func (c *CA) ClientTLS(serverName string, cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: c.Pool(), ServerName: serverName}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

// Key returns cert's private key as the signer pki hands out.
func Key(cert *tls.Certificate) crypto.Signer { return cert.PrivateKey.(crypto.Signer) }
