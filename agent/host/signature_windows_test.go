//go:build windows

package host_test

import (
	"os"
	"testing"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/tests/hosttest"
)

// TestWindowsSignatures runs the shared signature suite against the real
// WinVerifyTrust. The test binary itself is an unsigned package; CI signs
// copies of it with a throwaway certificate (untrusted) and then changes one
// (tampered) with osslsigncode (.ci/wine/signed-fixtures), and names them in
// LIVEDUMP_TEST_SIGNED_UNTRUSTED and LIVEDUMP_TEST_SIGNED_TAMPERED. The
// untrusted one claims to be "Microsoft Corporation", the default allowed
// publisher: a self-signed impersonation that must never be valid.
func TestWindowsSignatures(t *testing.T) {
	// Not t.TempDir: Go 1.26's RemoveAll uses a call Wine 8 lacks.
	dir, err := os.MkdirTemp("", "signatures")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir) // best effort, see above
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	untrusted, tampered := os.Getenv("LIVEDUMP_TEST_SIGNED_UNTRUSTED"), os.Getenv("LIVEDUMP_TEST_SIGNED_TAMPERED")
	if os.Getenv("CI") != "" && (untrusted == "" || tampered == "") {
		t.Fatal("CI: run .ci/wine/signed-fixtures and export what it prints")
	}
	hosttest.Signatures(t, host.NewWindows(), dir, hosttest.SignedFiles{
		Unsigned:  self,
		Untrusted: untrusted,
		Tampered:  tampered,
	})
}
