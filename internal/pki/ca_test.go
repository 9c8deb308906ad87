package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// testNow is whole seconds: certificate times are encoded with second
// precision, so exact comparisons need it.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newTestCA(t testing.TB) *CA {
	t.Helper()
	ca, err := NewCA("test CA", testNow, 365*24*time.Hour)
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	return ca
}

func testCSRFor(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{Subject: pkix.Name{CommonName: "livedump"}}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatalf("CreateCertificateRequest: %v", err)
	}
	return der
}

func testCSR(t testing.TB) *x509.CertificateRequest {
	t.Helper()
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := CreateCSR(key)
	if err != nil {
		t.Fatalf("CreateCSR: %v", err)
	}
	csr, err := ParseCSR(der)
	if err != nil {
		t.Fatalf("ParseCSR: %v", err)
	}
	return csr
}

// rsaKey returns a fixed RSA test key of the given size (1024 or 2048).
func rsaKey(t testing.TB, bits int) *rsa.PrivateKey {
	t.Helper()
	pemData := map[int]string{1024: testRSA1024PEM, 2048: testRSA2048PEM}[bits]
	k, err := ParseKey([]byte(pemData))
	if err != nil {
		t.Fatalf("parse RSA-%d test key: %v", bits, err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok || rk.N.BitLen() != bits {
		t.Fatalf("RSA-%d test key is %T", bits, k)
	}
	return rk
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestNewCA(t *testing.T) {
	ttl := 48 * time.Hour
	ca, err := NewCA("my CA", testNow, ttl)
	if err != nil {
		t.Fatal(err)
	}
	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid {
		t.Errorf("IsCA=%v BasicConstraintsValid=%v, want both true", c.IsCA, c.BasicConstraintsValid)
	}
	if c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("MaxPathLen=%d MaxPathLenZero=%v, want 0/true", c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("KeyUsage %v lacks CertSign", c.KeyUsage)
	}
	if c.Subject.CommonName != "my CA" {
		t.Errorf("CN = %q", c.Subject.CommonName)
	}
	if want := testNow.Add(-clockSkew); !c.NotBefore.Equal(want) {
		t.Errorf("NotBefore = %v, want %v", c.NotBefore, want)
	}
	if want := testNow.Add(ttl); !c.NotAfter.Equal(want) {
		t.Errorf("NotAfter = %v, want %v", c.NotAfter, want)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if !publicKeysEqual(c.PublicKey, ca.Key.Public()) {
		t.Error("certificate does not match key")
	}
	k, ok := ca.Key.(*ecdsa.PrivateKey)
	if !ok || k.Curve != elliptic.P256() {
		t.Errorf("CA key is %T, want ECDSA P-256", ca.Key)
	}
	if c.SerialNumber.Sign() <= 0 {
		t.Errorf("serial %v is not positive", c.SerialNumber)
	}
	other, err := NewCA("my CA", testNow, ttl)
	if err != nil {
		t.Fatal(err)
	}
	if other.Cert.SerialNumber.Cmp(c.SerialNumber) == 0 {
		t.Error("two CAs share a serial number")
	}
	if SameCert(c, other.Cert) || !SameCert(c, c) {
		t.Error("SameCert is wrong")
	}
	// The pool holds exactly this CA.
	leaf, err := ca.SignClient(testCSR(t), AgentIdentity("abcd"), testNow, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	opts := x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: testNow, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := leaf.Verify(opts); err != nil {
		t.Errorf("leaf does not verify against ca.Pool(): %v", err)
	}
	opts.Roots = other.Pool()
	if _, err := leaf.Verify(opts); err == nil {
		t.Error("leaf verifies against another CA's pool")
	}
}

func TestLoadOrCreateCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki", "nested") // does not exist yet
	ca, err := LoadOrCreateCA(dir, testNow)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s not created: %v", p, err)
		}
	}
	if names := dirNames(t, dir); len(names) != 2 {
		t.Errorf("dir holds %v, want only %s and %s", names, CACertFile, CAKeyFile)
	}
	if runtime.GOOS != "windows" {
		if m := fileMode(t, keyPath); m != 0o600 {
			t.Errorf("key mode = %v, want 0600", m)
		}
		if m := fileMode(t, certPath); m != 0o644 {
			t.Errorf("cert mode = %v, want 0644", m)
		}
	}
	if !ca.Cert.IsCA {
		t.Error("created CA certificate is not a CA")
	}
	if ca.Cert.NotAfter.Sub(testNow) < 365*24*time.Hour {
		t.Errorf("created CA expires at %v, suspiciously soon", ca.Cert.NotAfter)
	}

	// A later start, at another time, loads the same CA instead of minting one.
	again, err := LoadOrCreateCA(dir, testNow.Add(72*time.Hour))
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	if !SameCert(ca.Cert, again.Cert) {
		t.Error("reload returned a different certificate")
	}
	if !publicKeysEqual(ca.Key.Public(), again.Key.Public()) {
		t.Error("reload returned a different key")
	}
	// Certificates from the first instance verify under the reloaded one.
	leaf, err := ca.SignClient(testCSR(t), AgentIdentity("abcd"), testNow, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.CheckSignatureFrom(again.Cert); err != nil {
		t.Errorf("leaf of first instance does not verify under reloaded CA: %v", err)
	}
	// The reloaded key can sign.
	if _, err := again.SignClient(testCSR(t), AgentIdentity("abcd"), testNow, time.Hour); err != nil {
		t.Errorf("reloaded CA cannot sign: %v", err)
	}
}

func TestLoadOrCreateCAIncomplete(t *testing.T) {
	for _, keep := range []string{CACertFile, CAKeyFile} {
		t.Run("only "+keep, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := LoadOrCreateCA(dir, testNow); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{CACertFile, CAKeyFile} {
				if f != keep {
					if err := os.Remove(filepath.Join(dir, f)); err != nil {
						t.Fatal(err)
					}
				}
			}
			before, err := os.ReadFile(filepath.Join(dir, keep))
			if err != nil {
				t.Fatal(err)
			}
			ca, err := LoadOrCreateCA(dir, testNow)
			if err == nil {
				t.Fatalf("LoadOrCreateCA with only %s = %v, want error", keep, ca)
			}
			if !strings.Contains(err.Error(), "incomplete") {
				t.Errorf("error %q does not say the CA is incomplete", err)
			}
			after, err := os.ReadFile(filepath.Join(dir, keep))
			if err != nil || !bytes.Equal(before, after) {
				t.Errorf("surviving %s was modified (err %v)", keep, err)
			}
			if names := dirNames(t, dir); len(names) != 1 {
				t.Errorf("dir holds %v after refusing, want only %s", names, keep)
			}
		})
	}
}

func TestLoadOrCreateCAStatError(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("permission semantics differ")
	}
	// ca.crt being a path *through* a regular file gives ENOTDIR, not
	// ErrNotExist: that must not be mistaken for "no CA yet".
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateCA(file, testNow); err == nil {
		t.Fatal("LoadOrCreateCA under a regular file succeeded")
	}
}

func TestLoadCA(t *testing.T) {
	dir := t.TempDir()
	ca1, ca2 := newTestCA(t), newTestCA(t)
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key1, err := EncodeKey(ca1.Key)
	if err != nil {
		t.Fatal(err)
	}
	key2, err := EncodeKey(ca2.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert1 := write("ca1.crt", EncodeCerts(ca1.Cert))
	k1 := write("ca1.key", key1)
	k2 := write("ca2.key", key2)

	got, err := LoadCA(cert1, k1)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if !SameCert(got.Cert, ca1.Cert) {
		t.Error("LoadCA returned another certificate")
	}

	leafKey, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca1.SignClient(testCSR(t), AgentIdentity("abcd"), testNow, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leafKeyPEM, err := EncodeKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	// A chain file with the CA first is fine: the first certificate counts.
	bundle := write("bundle.crt", EncodeCerts(ca1.Cert, leaf))
	if _, err := LoadCA(bundle, k1); err != nil {
		t.Errorf("LoadCA(bundle with CA first): %v", err)
	}

	tests := []struct {
		name, cert, key, wantErr string
	}{
		{"mismatched key", cert1, k2, "does not match"},
		{"not a CA", write("leaf.crt", EncodeCerts(leaf)), write("leaf.key", leafKeyPEM), "not a CA"},
		{"missing cert", filepath.Join(dir, "nope.crt"), k1, "certificate"},
		{"missing key", cert1, filepath.Join(dir, "nope.key"), "key"},
		{"garbage cert", write("garbage.crt", []byte("not pem")), k1, "no certificate"},
		{"garbage key", cert1, write("garbage.key", []byte("not pem")), "no PEM"},
		{"key in cert file", write("swapped.crt", key1), k1, "no certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca, err := LoadCA(tt.cert, tt.key)
			if err == nil {
				t.Fatalf("LoadCA = %v, want error", ca)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseCSR(t *testing.T) {
	ecKey := func(c elliptic.Curve) crypto.Signer {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	good := testCSRFor(t, ecKey(elliptic.P256()), nil)
	// Same CSR with one byte of the signed subject changed: still parses,
	// but the signature no longer covers it.
	tampered := bytes.Clone(good)
	i := bytes.Index(tampered, []byte("livedump"))
	if i < 0 {
		t.Fatal("subject not found in CSR")
	}
	tampered[i] = 'L'
	// Flipped bits at the end land in the signature value.
	badSig := bytes.Clone(good)
	badSig[len(badSig)-1] ^= 0xff

	tests := []struct {
		name string
		der  []byte
		ok   bool
	}{
		{"P-256", good, true},
		{"P-384", testCSRFor(t, ecKey(elliptic.P384()), nil), true},
		{"RSA-2048", testCSRFor(t, rsaKey(t, 2048), nil), true},
		{"P-224", testCSRFor(t, ecKey(elliptic.P224()), nil), false},
		{"P-521", testCSRFor(t, ecKey(elliptic.P521()), nil), false},
		{"RSA-1024", testCSRFor(t, rsaKey(t, 1024), nil), false},
		{"Ed25519", testCSRFor(t, edKey, nil), false},
		{"tampered subject", tampered, false},
		{"bad signature bytes", badSig, false},
		{"empty", nil, false},
		{"garbage", []byte("this is not a certificate request"), false},
		{"truncated", good[:len(good)/2], false},
		{"trailing data", append(bytes.Clone(good), 0), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr, err := ParseCSR(tt.der)
			if tt.ok {
				if err != nil {
					t.Fatalf("ParseCSR: %v", err)
				}
				if csr == nil || csr.PublicKey == nil {
					t.Fatal("ParseCSR returned no key")
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseCSR accepted %s", tt.name)
			}
		})
	}
}

func TestCreateCSRParses(t *testing.T) {
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := CreateCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ParseCSR(der)
	if err != nil {
		t.Fatalf("ParseCSR(CreateCSR) = %v", err)
	}
	if !publicKeysEqual(csr.PublicKey, key.Public()) {
		t.Error("CSR public key differs from the key")
	}
}

func TestSignClient(t *testing.T) {
	ca := newTestCA(t) // valid until testNow + 1y
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	// The CSR asks for much more than it gets.
	csrDER := testCSRFor(t, key, &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: "admin", Organization: []string{"evil"}},
		DNSNames:       []string{"controller.example.com"},
		IPAddresses:    []net.IP{net.ParseIP("10.0.0.1")},
		EmailAddresses: []string{"root@example.com"},
		URIs:           []*url.URL{OperatorIdentity(RoleAdmin, "root").URI(), mustParseURL(t, "livedump://agent/other")},
	})
	csr, err := ParseCSR(csrDER)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		id        Identity
		ttl       time.Duration
		wantAfter time.Time
	}{
		{"agent 30d", AgentIdentity("0011223344556677"), 30 * 24 * time.Hour, testNow.Add(30 * 24 * time.Hour)},
		{"operator 1h", OperatorIdentity(RoleViewer, "alice"), time.Hour, testNow.Add(time.Hour)},
		{"capped at CA expiry", AgentIdentity("abcd"), 5 * 365 * 24 * time.Hour, ca.Cert.NotAfter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert, err := ca.SignClient(csr, tt.id, testNow, tt.ttl)
			if err != nil {
				t.Fatalf("SignClient: %v", err)
			}
			if len(cert.URIs) != 1 || cert.URIs[0].String() != tt.id.URI().String() {
				t.Errorf("URIs = %v, want exactly [%v]", cert.URIs, tt.id.URI())
			}
			if len(cert.DNSNames) != 0 || len(cert.IPAddresses) != 0 || len(cert.EmailAddresses) != 0 {
				t.Errorf("CSR SANs leaked: dns %v ip %v email %v", cert.DNSNames, cert.IPAddresses, cert.EmailAddresses)
			}
			if cert.Subject.CommonName != tt.id.String() || len(cert.Subject.Organization) != 0 {
				t.Errorf("Subject = %v, want CN=%s only", cert.Subject, tt.id)
			}
			if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
				t.Errorf("ExtKeyUsage = %v, want [ClientAuth]", cert.ExtKeyUsage)
			}
			if cert.IsCA {
				t.Error("client certificate is a CA")
			}
			if skew := testNow.Sub(cert.NotBefore); skew < 0 || skew > 5*time.Minute {
				t.Errorf("NotBefore = %v: backdated by %v, want 0..5m", cert.NotBefore, skew)
			}
			if !cert.NotAfter.Equal(tt.wantAfter) {
				t.Errorf("NotAfter = %v, want %v", cert.NotAfter, tt.wantAfter)
			}
			if cert.NotAfter.After(ca.Cert.NotAfter) {
				t.Errorf("NotAfter %v outlives the CA (%v)", cert.NotAfter, ca.Cert.NotAfter)
			}
			if !publicKeysEqual(cert.PublicKey, key.Public()) {
				t.Error("certificate is not for the CSR's key")
			}
			got, err := IdentityFromCert(cert)
			if err != nil || got != tt.id {
				t.Errorf("IdentityFromCert = %+v, %v; want %+v", got, err, tt.id)
			}
			opts := x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: testNow, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
			if _, err := cert.Verify(opts); err != nil {
				t.Errorf("Verify as client: %v", err)
			}
			opts.KeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			if _, err := cert.Verify(opts); err == nil {
				t.Error("client certificate verifies for server auth")
			}
		})
	}

	a, err := ca.SignClient(csr, AgentIdentity("abcd"), testNow, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ca.SignClient(csr, AgentIdentity("abcd"), testNow, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if SerialHex(a) == SerialHex(b) {
		t.Error("two certificates share a serial")
	}
	if SerialHex(a) != a.SerialNumber.Text(16) {
		t.Errorf("SerialHex = %q, want %q", SerialHex(a), a.SerialNumber.Text(16))
	}

	for _, bad := range []Identity{{}, AgentIdentity("../x"), AgentIdentity("ABC"), OperatorIdentity("root", "alice"), OperatorIdentity(RoleAdmin, "")} {
		if cert, err := ca.SignClient(csr, bad, testNow, time.Hour); err == nil {
			t.Errorf("SignClient(%+v) issued %v, want error", bad, cert.URIs)
		}
	}
}

func TestSignServer(t *testing.T) {
	ca := newTestCA(t)
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	v4, v6 := net.ParseIP("192.0.2.10"), net.ParseIP("2001:db8::1")
	tests := []struct {
		name   string
		dns    []string
		ips    []net.IP
		wantCN string
	}{
		{"dns and ips", []string{"ctl.example.com", "localhost"}, []net.IP{v4, v6}, "ctl.example.com"},
		{"ips only", nil, []net.IP{v4}, "livedump-controller"},
		{"dns only", []string{"ctl.internal"}, nil, "ctl.internal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert, err := ca.SignServer(key.Public(), tt.dns, tt.ips, testNow, 90*24*time.Hour)
			if err != nil {
				t.Fatalf("SignServer: %v", err)
			}
			if cert.Subject.CommonName != tt.wantCN {
				t.Errorf("CN = %q, want %q", cert.Subject.CommonName, tt.wantCN)
			}
			if len(cert.DNSNames) != len(tt.dns) {
				t.Errorf("DNSNames = %v, want %v", cert.DNSNames, tt.dns)
			}
			for i, d := range tt.dns {
				if i < len(cert.DNSNames) && cert.DNSNames[i] != d {
					t.Errorf("DNSNames[%d] = %q, want %q", i, cert.DNSNames[i], d)
				}
			}
			if len(cert.IPAddresses) != len(tt.ips) {
				t.Errorf("IPAddresses = %v, want %v", cert.IPAddresses, tt.ips)
			}
			for i, ip := range tt.ips {
				if i < len(cert.IPAddresses) && !cert.IPAddresses[i].Equal(ip) {
					t.Errorf("IPAddresses[%d] = %v, want %v", i, cert.IPAddresses[i], ip)
				}
			}
			for _, d := range cert.DNSNames {
				if net.ParseIP(d) != nil {
					t.Errorf("IP %q ended up in DNSNames", d)
				}
			}
			if len(cert.URIs) != 0 {
				t.Errorf("server certificate has URI SANs %v", cert.URIs)
			}
			if _, err := IdentityFromCert(cert); err == nil {
				t.Error("server certificate carries a livedump identity")
			}
			if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
				t.Errorf("ExtKeyUsage = %v, want [ServerAuth]", cert.ExtKeyUsage)
			}
			if !cert.NotBefore.Equal(testNow.Add(-clockSkew)) || !cert.NotAfter.Equal(testNow.Add(90*24*time.Hour)) {
				t.Errorf("validity %v..%v", cert.NotBefore, cert.NotAfter)
			}
			hosts := append([]string{}, tt.dns...)
			for _, ip := range tt.ips {
				hosts = append(hosts, ip.String())
			}
			for _, h := range hosts {
				_, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: testNow, DNSName: h})
				if err != nil {
					t.Errorf("Verify for %q: %v", h, err)
				}
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: testNow, DNSName: "evil.example.com"}); err == nil {
				t.Error("certificate verifies for an unlisted host")
			}
		})
	}

	capped, err := ca.SignServer(key.Public(), []string{"x"}, nil, testNow, 100*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !capped.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Errorf("NotAfter = %v, want capped at CA's %v", capped.NotAfter, ca.Cert.NotAfter)
	}
}

func TestParseSerial(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"0a1b", "a1b"},
		{"0A:1B", "a1b"},
		{"0x5EED", "5eed"},
		{"serial=00FF", "ff"},
		{"  deadbeef ", "deadbeef"},
	} {
		got, err := ParseSerial(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseSerial(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "0", "xyz", "-1", strings.Repeat("f", 41), "12 34"} {
		if got, err := ParseSerial(bad); err == nil {
			t.Errorf("ParseSerial(%q) = %q, want an error", bad, got)
		}
	}
}

func TestIssuedAtUndoesTheBackdating(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ca, err := NewCA("test", now, time.Hour*24)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := GenerateKey()
	der, _ := CreateCSR(key)
	csr, _ := ParseCSR(der)
	cert, err := ca.SignClient(csr, OperatorIdentity(RoleAdmin, "alice"), now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got := IssuedAt(cert); !got.Equal(now) {
		t.Errorf("IssuedAt = %v, want %v", got, now)
	}
	if s, err := ParseSerial(SerialHex(cert)); err != nil || s != SerialHex(cert) {
		t.Errorf("ParseSerial(SerialHex) = %q, %v", s, err)
	}
}
