// Package pki holds the certificate machinery shared by controller and agent:
// the controller CA, CSR signing, livedump identities in URI SANs, and key and
// certificate files.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// clockSkew backdates NotBefore so a peer whose clock runs a little behind
// still accepts a freshly issued certificate.
const clockSkew = 5 * time.Minute

// File names of the CA inside a PKI directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// CA signs the certificates of one controller's fleet.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// GenerateKey creates an ECDSA P-256 private key, the key type used
// throughout livedump.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func randomSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// NewCA creates a self-signed ECDSA P-256 CA valid for ttl from now.
func NewCA(commonName string, now time.Time, ttl time.Duration) (*CA, error) {
	key, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"livedump"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LoadCA reads a CA certificate and its private key from PEM files, e.g. an
// external CA given by the operator. The key must match the certificate.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certs, err := ReadCerts(certFile)
	if err != nil {
		return nil, fmt.Errorf("load CA certificate: %w", err)
	}
	key, err := ReadKey(keyFile)
	if err != nil {
		return nil, fmt.Errorf("load CA key: %w", err)
	}
	cert := certs[0]
	if !cert.IsCA {
		return nil, fmt.Errorf("load CA: %s is not a CA certificate", certFile)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("load CA: key %s does not match certificate %s", keyFile, certFile)
	}
	return &CA{Cert: cert, Key: key}, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// LoadOrCreateCA loads the CA from dir, creating it on first start. The key
// file is written 0600; a CA certificate without its key is an error rather
// than a silent replacement, since replacing the CA would orphan every agent.
func LoadOrCreateCA(dir string, now time.Time) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		return LoadCA(certPath, keyPath)
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
	default:
		// A lone key may be a first start that crashed between the two
		// writes, or a certificate someone removed; only a person can tell,
		// and guessing wrong would orphan every agent.
		return nil, fmt.Errorf("CA in %s is incomplete (certificate: %v, key: %v); restore both files or remove both to create a new CA", dir, certErr, keyErr)
	}
	ca, err := NewCA("livedump controller CA", now, 10*365*24*time.Hour)
	if err != nil {
		return nil, err
	}
	if err := WriteKey(keyPath, ca.Key); err != nil {
		return nil, err
	}
	if err := WriteCerts(certPath, ca.Cert); err != nil {
		return nil, err
	}
	return ca, nil
}

// Pool returns a cert pool holding only this CA, for pinning.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// ParseCSR parses a DER certificate request, checks its signature and
// accepts only key types TLS 1.3 handles well: ECDSA P-256/P-384 or RSA of
// at least 2048 bits.
func ParseCSR(der []byte) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("csr: bad signature: %w", err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, errors.New("csr: ECDSA key must use P-256 or P-384")
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, errors.New("csr: RSA key must have at least 2048 bits")
		}
	default:
		return nil, fmt.Errorf("csr: unsupported key type %T", csr.PublicKey)
	}
	return csr, nil
}

// SignClient issues a client certificate for the CSR's key carrying exactly
// one identity URI SAN; everything else in the CSR is ignored.
func (ca *CA) SignClient(csr *x509.CertificateRequest, id Identity, now time.Time, ttl time.Duration) (*x509.Certificate, error) {
	if err := id.Validate(); err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: id.String()},
		URIs:         []*url.URL{id.URI()},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return ca.sign(tmpl, csr.PublicKey)
}

// SignServer issues the controller's TLS server certificate for key.
func (ca *CA) SignServer(pub crypto.PublicKey, dnsNames []string, ips []net.IP, now time.Time, ttl time.Duration) (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	cn := "livedump-controller"
	if len(dnsNames) > 0 {
		cn = dnsNames[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	return ca.sign(tmpl, pub)
}

func (ca *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// CreateCSR makes a DER certificate request for key. The subject carries no
// meaning: the CA decides the identity.
func CreateCSR(key crypto.Signer) ([]byte, error) {
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "livedump"},
	}, key)
}

// SerialHex renders a certificate serial the way the store records it.
func SerialHex(c *x509.Certificate) string { return fmt.Sprintf("%x", c.SerialNumber) }

// maxSerialHex bounds a serial typed by a person: RFC 5280 allows 20 octets.
const maxSerialHex = 40

// ParseSerial turns a serial as a person copies it (from `openssl x509
// -serial`, with colons, a 0x prefix, upper case or leading zeros) into the
// form SerialHex gives.
func ParseSerial(s string) (string, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimPrefix(strings.TrimPrefix(t, "serial="), "0x")
	t = strings.ReplaceAll(t, ":", "")
	if t == "" || len(t) > maxSerialHex {
		return "", fmt.Errorf("serial %q: want 1-%d hex digits", s, maxSerialHex)
	}
	n, ok := new(big.Int).SetString(t, 16)
	if !ok || n.Sign() <= 0 {
		return "", fmt.Errorf("serial %q: want a positive hexadecimal number", s)
	}
	return fmt.Sprintf("%x", n), nil
}

// IssuedAt is when a certificate from SignClient was signed: its NotBefore
// is backdated by the allowed clock skew. Revoking an operator name refuses
// the certificates issued before the revocation, so one issued right after
// it, whose NotBefore is a few minutes earlier, still works.
func IssuedAt(c *x509.Certificate) time.Time { return c.NotBefore.Add(clockSkew) }

// SameCert reports whether two certificates are byte-identical.
func SameCert(a, b *x509.Certificate) bool { return bytes.Equal(a.Raw, b.Raw) }
