package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

func TestWriteKeyAndReadKey(t *testing.T) {
	dir := t.TempDir()
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "sub", "agent.key")
	if err := WriteKey(path, key); err != nil {
		t.Fatalf("WriteKey: %v", err)
	}
	if runtime.GOOS != "windows" {
		if m := fileMode(t, path); m != 0o600 {
			t.Errorf("key mode = %v, want 0600", m)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("key file is not a PKCS#8 PEM block: %q", b)
	}
	got, err := ReadKey(path)
	if err != nil {
		t.Fatalf("ReadKey: %v", err)
	}
	if !key.Equal(got) {
		t.Error("ReadKey returned a different key")
	}
	if names := dirNames(t, filepath.Dir(path)); len(names) != 1 {
		t.Errorf("dir holds %v, want only agent.key", names)
	}
	if _, err := ReadKey(filepath.Join(dir, "missing.key")); err == nil {
		t.Error("ReadKey of a missing file succeeded")
	}
}

func TestParseKey(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaK := rsaKey(t, 2048)
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pemOf := func(typ string, der []byte) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	}
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	ecDER, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	ecPKCS8, err := EncodeKey(ec)
	if err != nil {
		t.Fatal(err)
	}

	type equaler interface{ Equal(crypto.PrivateKey) bool }
	tests := []struct {
		name string
		data []byte
		want equaler // nil: must fail
	}{
		{"EncodeKey EC", ecPKCS8, ec},
		{"PKCS8 EC", pemOf("PRIVATE KEY", pkcs8(ec)), ec},
		{"PKCS8 RSA", pemOf("PRIVATE KEY", pkcs8(rsaK)), rsaK},
		{"PKCS8 Ed25519", pemOf("PRIVATE KEY", pkcs8(ed)), ed},
		{"SEC1 EC", pemOf("EC PRIVATE KEY", ecDER), ec},
		{"PKCS1 RSA", pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaK)), rsaK},
		{"leading text", append([]byte("comment line\n"), ecPKCS8...), ec},
		{"empty", nil, nil},
		{"no PEM", []byte("-----BEGIN nothing"), nil},
		{"public key block", pemOf("PUBLIC KEY", []byte{0x30, 0x00}), nil},
		{"certificate block", pemOf("CERTIFICATE", []byte{0x30, 0x00}), nil},
		{"corrupt PKCS8", pemOf("PRIVATE KEY", []byte("garbage")), nil},
		{"corrupt SEC1", pemOf("EC PRIVATE KEY", []byte("garbage")), nil},
		{"corrupt PKCS1", pemOf("RSA PRIVATE KEY", []byte("garbage")), nil},
		{"EC DER labelled RSA", pemOf("RSA PRIVATE KEY", ecDER), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseKey(tt.data)
			if tt.want == nil {
				if err == nil {
					t.Fatalf("ParseKey accepted %s as %T", tt.name, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseKey: %v", err)
			}
			if !tt.want.Equal(got) {
				t.Errorf("ParseKey returned a different key (%T)", got)
			}
			// Re-encoding always yields PKCS#8 that parses to the same key.
			again, err := EncodeKey(got)
			if err != nil {
				t.Fatalf("EncodeKey: %v", err)
			}
			back, err := ParseKey(again)
			if err != nil || !tt.want.Equal(back) {
				t.Errorf("EncodeKey/ParseKey round trip: %T, %v", back, err)
			}
		})
	}
}

func TestCertsRoundTrip(t *testing.T) {
	ca := newTestCA(t)
	leaf, err := ca.SignClient(testCSR(t), AgentIdentity("abcd"), testNow, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "chain.pem")
	if err := WriteCerts(path, leaf, ca.Cert); err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" {
		if m := fileMode(t, path); m != 0o644 {
			t.Errorf("cert mode = %v, want 0644", m)
		}
	}
	got, err := ReadCerts(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !SameCert(got[0], leaf) || !SameCert(got[1], ca.Cert) {
		t.Fatalf("ReadCerts returned %d certs in the wrong order or form", len(got))
	}

	keyPEM, err := EncodeKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	// Non-certificate blocks are skipped, in any position.
	mixed := append(append(bytes.Clone(keyPEM), EncodeCerts(leaf)...), keyPEM...)
	if certs, err := ParseCerts(mixed); err != nil || len(certs) != 1 || !SameCert(certs[0], leaf) {
		t.Errorf("ParseCerts(key+cert+key) = %d certs, %v", len(certs), err)
	}
	for name, data := range map[string][]byte{
		"empty":      nil,
		"only a key": keyPEM,
		"garbage":    []byte("hello"),
		"bad DER":    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("nope")}),
	} {
		if certs, err := ParseCerts(data); err == nil {
			t.Errorf("ParseCerts(%s) = %d certs, want error", name, len(certs))
		}
	}
	if _, err := ReadCerts(filepath.Join(t.TempDir(), "missing.pem")); err == nil {
		t.Error("ReadCerts of a missing file succeeded")
	}
}
