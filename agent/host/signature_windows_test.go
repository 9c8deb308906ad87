//go:build windows

package host_test

import (
	"os"
	"testing"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/agent/host/hosttest"
)

// TestWindowsSignatures runs the shared signature suite against
// WinVerifyTrust. No trusted signed package is at hand here, so only the
// cases every machine (and Wine) can show run: a missing file is an error,
// a file Authenticode cannot sign is not valid and names no publisher.
func TestWindowsSignatures(t *testing.T) {
	// Not t.TempDir: Go 1.26's RemoveAll uses a call Wine 8 lacks.
	dir, err := os.MkdirTemp("", "signatures")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir) // best effort, see above
	hosttest.Signatures(t, host.NewWindows(), dir, hosttest.SignedFiles{})
}
