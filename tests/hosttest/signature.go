package hosttest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livedump/livedump/agent/host"
)

// Verifier is the part of host.Host that checks Authenticode signatures.
type Verifier interface {
	VerifySignature(ctx context.Context, path string) (host.Signature, error)
}

// SignedFiles are files whose signatures the implementation under test
// knows; a field left empty skips its case (the Windows host has no
// trusted signed package to hand, the simulation has them all).
type SignedFiles struct {
	// Valid is a file validly signed by Publisher.
	Valid, Publisher string
	// Unsigned is a package (a signable file type) with no signature.
	Unsigned string
	// Tampered is a signed package changed after signing.
	Tampered string
	// Untrusted is a package signed by a certificate that does not chain
	// to a trusted root.
	Untrusted string
}

// Signatures runs the shared signature tests against v. dir is a scratch
// directory for files the suite writes itself.
func Signatures(t *testing.T, v Verifier, dir string, f SignedFiles) {
	ctx := context.Background()
	t.Run("Missing", func(t *testing.T) {
		if s, err := v.VerifySignature(ctx, filepath.Join(dir, "no-such-file.msi")); err == nil {
			t.Fatalf("a missing file verified as %+v, want an error", s)
		}
	})
	t.Run("NotSignable", func(t *testing.T) {
		p := filepath.Join(dir, "plain.txt")
		if err := os.WriteFile(p, []byte("just text, no package, no signature\r\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := v.VerifySignature(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if s.Valid || s.Publisher != "" || s.Problem == "" {
			t.Fatalf("a text file: %+v, want not valid, no publisher, a problem named", s)
		}
	})
	notValid := func(name, path, problem string, signed bool) {
		t.Run(name, func(t *testing.T) {
			if path == "" {
				t.Skip("no such file for this host")
			}
			s, err := v.VerifySignature(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			if s.Valid || s.Signed != signed || s.Publisher != "" || !strings.HasPrefix(s.Problem, problem) {
				t.Fatalf("%s: %+v, want signed=%v, not valid, no publisher, problem %s", name, s, signed, problem)
			}
		})
	}
	notValid("Unsigned", f.Unsigned, "TRUST_E_NOSIGNATURE", false)
	notValid("Tampered", f.Tampered, "TRUST_E_BAD_DIGEST", true)
	notValid("Untrusted", f.Untrusted, "CERT_E_UNTRUSTEDROOT", true)
	t.Run("Valid", func(t *testing.T) {
		if f.Valid == "" {
			t.Skip("no validly signed file for this host")
		}
		s, err := v.VerifySignature(ctx, f.Valid)
		if err != nil {
			t.Fatal(err)
		}
		if !s.Signed || !s.Valid || s.Publisher != f.Publisher || s.Problem != "" {
			t.Fatalf("%+v, want valid, published by %q", s, f.Publisher)
		}
	})
}
