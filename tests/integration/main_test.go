package integration

import (
	"os"
	"testing"

	"github.com/livedump/livedump/sim"
	"github.com/livedump/livedump/sim/dtracesim"
	"github.com/livedump/livedump/tests/pgtest"
)

// TestMain lets this test binary be the simulated dtrace too: the simulated
// host re-executes the running program with LIVEDUMP_RUN_AS=dtrace-sim, as
// the livedump binaries do in dev mode, so dtrace is a real separate
// process here as well.
func TestMain(m *testing.M) {
	if os.Getenv(sim.EnvRunAs) == sim.RunAsDTrace {
		os.Exit(dtracesim.Main(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
	}
	if js := os.Getenv(envReplica); js != "" {
		os.Exit(runReplica(js))
	}
	if js := os.Getenv(envFaultController); js != "" {
		os.Exit(runFaultController(js))
	}
	if js := os.Getenv(envFaultAgent); js != "" {
		os.Exit(runFaultAgent(js))
	}
	pgtest.Main(m)
}
