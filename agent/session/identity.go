package session

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/livedump/livedump/internal/atomicfile"
	"github.com/livedump/livedump/internal/pki"
)

// IdentityFile holds the agent's private key and certificate chain in one
// PEM file, written 0600 and replaced atomically, so key and certificate can
// never disagree after a crash mid-renewal.
const IdentityFile = "identity.pem"

// Identity is the agent's enrolled identity: its ID, key and certificate.
type Identity struct {
	AgentID string
	Key     crypto.Signer
	Chain   []*x509.Certificate // leaf first
}

// Leaf is the agent's own certificate.
func (id *Identity) Leaf() *x509.Certificate { return id.Chain[0] }

// TLSCertificate returns the identity for a TLS client.
func (id *Identity) TLSCertificate() *tls.Certificate {
	c := &tls.Certificate{PrivateKey: id.Key, Leaf: id.Leaf()}
	for _, x := range id.Chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// RenewAt is when two thirds of the certificate's life have passed.
func (id *Identity) RenewAt() time.Time {
	l := id.Leaf()
	return l.NotBefore.Add(l.NotAfter.Sub(l.NotBefore) * 2 / 3)
}

func newIdentity(key crypto.Signer, chainDER [][]byte) (*Identity, error) {
	if len(chainDER) == 0 {
		return nil, errors.New("certificate chain is empty")
	}
	var chain []*x509.Certificate
	for _, d := range chainDER {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		chain = append(chain, c)
	}
	return identityFromChain(key, chain)
}

func identityFromChain(key crypto.Signer, chain []*x509.Certificate) (*Identity, error) {
	pub, ok := chain[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return nil, errors.New("certificate does not match the private key")
	}
	pid, err := pki.IdentityFromCert(chain[0])
	if err != nil {
		return nil, err
	}
	if pid.Kind != pki.KindAgent {
		return nil, fmt.Errorf("certificate is for %s, not an agent", pid)
	}
	return &Identity{AgentID: pid.AgentID, Key: key, Chain: chain}, nil
}

// LoadIdentity reads the identity from dir. It returns (nil, nil) when the
// agent has not enrolled yet.
func LoadIdentity(dir string) (*Identity, error) {
	path := filepath.Join(dir, IdentityFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	key, err := pki.ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	chain, err := pki.ParseCerts(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	id, err := identityFromChain(key, chain)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return id, nil
}

// Save writes the identity to dir with mode 0600.
func (id *Identity) Save(dir string) error {
	keyPEM, err := pki.EncodeKey(id.Key)
	if err != nil {
		return err
	}
	data := append(keyPEM, pki.EncodeCerts(id.Chain...)...)
	return atomicfile.Write(filepath.Join(dir, IdentityFile), data, 0o600)
}
