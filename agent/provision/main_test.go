package provision

import (
	"os"
	"testing"

	"github.com/livedump/livedump/sim"
	"github.com/livedump/livedump/sim/dtracesim"
)

// TestMain lets this test binary be the simulated dtrace too: the simulated
// host re-executes the running program with LIVEDUMP_RUN_AS=dtrace-sim, so
// the driver check runs a real, separate dtrace process as on Windows.
func TestMain(m *testing.M) {
	if os.Getenv(sim.EnvRunAs) == sim.RunAsDTrace {
		os.Exit(dtracesim.Main(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}
