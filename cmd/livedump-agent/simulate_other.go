//go:build !windows

package main

import (
	"context"
	"os"
	"path/filepath"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/internal/config"
	"github.com/livedump/livedump/sim"
	"github.com/livedump/livedump/sim/dtracesim"
)

// runSimulatedDTraceIfAsked runs this process as the simulated dtrace when
// the simulated host re-executes it as such, and exits.
func runSimulatedDTraceIfAsked() {
	if os.Getenv(sim.EnvRunAs) == sim.RunAsDTrace {
		os.Exit(dtracesim.Main(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
	}
}

// simulatedHost is the simulated Windows machine kept under
// state_dir/host (--simulate, --sim-hostname, --sim-bitlocker).
func simulatedHost(v *config.Config, stateDir, dtracePath string) (host.Host, error) {
	return sim.New(sim.Config{
		StateDir:   filepath.Join(stateDir, "host"),
		Hostname:   v.GetString("sim_hostname"),
		BitLocker:  v.GetBool("sim_bitlocker"),
		DTracePath: dtracePath,
	})
}

// runSimulatedService runs the agent as the simulated service manager
// would: again after each simulated reboot.
func runSimulatedService(ctx context.Context, h host.Host, run func(context.Context) error) error {
	return sim.RunService(ctx, h.(*sim.Host), run)
}
