// Package security performs the attacks of docs/security.md against a real
// controller with real mTLS and real identities of every kind (no
// certificate, a stolen agent key, operator, viewer, admin, and a hostile
// controller facing a real agent), and asserts that each one is refused and
// leaves nothing changed or stored.
package security

import (
	"os"
	"testing"

	"github.com/livedump/livedump/sim"
	"github.com/livedump/livedump/sim/dtracesim"
)

// TestMain lets this test binary be the simulated dtrace too, as in
// tests/integration.
func TestMain(m *testing.M) {
	if os.Getenv(sim.EnvRunAs) == sim.RunAsDTrace {
		os.Exit(dtracesim.Main(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}
