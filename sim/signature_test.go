package sim

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/tests/hosttest"
)

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustSign(t *testing.T, m MSIManifest, s MSISigner) []byte {
	t.Helper()
	b, err := BuildSignedMSI(m, s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSignatures runs the shared suite: the simulation has every kind of
// package at hand.
func TestSignatures(t *testing.T) {
	h := newHost(t, Config{})
	dir := t.TempDir()
	unsigned, err := BuildMSI(dtraceManifest(0))
	if err != nil {
		t.Fatal(err)
	}
	signed := mustSign(t, dtraceManifest(0), DTraceSigner)
	// The attacker's edit: a file of the signed package replaced, the
	// signature kept.
	tampered := bytes.Replace(signed, []byte("simulated driver"), []byte("attacker's driver"), 1)
	hosttest.Signatures(t, h, dir, hosttest.SignedFiles{
		Valid:     writeFile(t, dir, "valid.msi", signed),
		Publisher: host.DTracePublisher,
		Unsigned:  writeFile(t, dir, "unsigned.msi", unsigned),
		Tampered:  writeFile(t, dir, "tampered.msi", tampered),
		Untrusted: writeFile(t, dir, "untrusted.msi", mustSign(t, dtraceManifest(0), MSISigner{Publisher: host.DTracePublisher, Untrusted: true})),
	})
}

func TestSignatureDetails(t *testing.T) {
	h := newHost(t, Config{})
	dir := t.TempDir()
	ctx := context.Background()
	verify := func(data []byte) host.Signature {
		t.Helper()
		s, err := h.VerifySignature(ctx, writeFile(t, dir, "x.msi", data))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	contoso := mustSign(t, dtraceManifest(0), MSISigner{Publisher: "Contoso Code Signing", Organization: "Contoso Ltd"})
	if s := verify(contoso); !s.Valid || s.Publisher != "Contoso Code Signing" || s.Organization != "Contoso Ltd" {
		t.Errorf("Contoso-signed: %+v", s)
	}
	// Claiming another publisher in a signed package breaks its digest.
	forged := bytes.Replace(contoso, []byte(`"Contoso Code Signing"`), []byte(`"Microsoft Corporation"`), 1)
	if s := verify(forged); s.Valid || !strings.HasPrefix(s.Problem, "TRUST_E_BAD_DIGEST") {
		t.Errorf("publisher rewritten after signing: %+v", s)
	}
	if s := verify(mustSign(t, dtraceManifest(0), MSISigner{Publisher: "x", Revoked: true})); s.Valid || !strings.HasPrefix(s.Problem, "CERT_E_REVOKED") {
		t.Errorf("revoked: %+v", s)
	}
	if s := verify(append(bytes.Clone(contoso), "junk"...)); s.Valid {
		t.Errorf("junk after the signature: %+v", s)
	}
	if _, err := SignMSI(contoso, DTraceSigner); err == nil {
		t.Error("signing a signed package twice was accepted")
	}
	if _, err := SignMSI([]byte("not a package"), DTraceSigner); err == nil {
		t.Error("signing junk was accepted")
	}
	if _, err := SignMSI(mustBuild(t), MSISigner{}); err == nil {
		t.Error("a signature without a publisher was accepted")
	}
	if _, err := h.VerifySignature(ctx, dir); err == nil {
		t.Error("verifying a directory did not fail")
	}
}

func mustBuild(t *testing.T) []byte {
	t.Helper()
	b, err := BuildMSI(dtraceManifest(0))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSignedPackageInstalls: msiexec takes signed packages as it takes
// unsigned ones; the signature is for whoever verifies it first.
func TestSignedPackageInstalls(t *testing.T) {
	h := newHost(t, Config{})
	dir := t.TempDir()
	msi := writeFile(t, dir, "DTrace.msi", mustSign(t, dtraceManifest(0), DTraceSigner))
	code, err := h.InstallMSI(context.Background(), msi, filepath.Join(dir, "install.log"))
	if err != nil || code != host.MSISuccess {
		t.Fatalf("install of a signed package: %d, %v", code, err)
	}
	if ok, _ := h.FileExists(dtraceExe); !ok {
		t.Fatal("dtrace.exe not installed")
	}
	if n := h.MsiexecRuns(); n != 1 {
		t.Fatalf("MsiexecRuns = %d, want 1", n)
	}
}
