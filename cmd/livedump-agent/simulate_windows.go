//go:build windows

package main

import (
	"context"
	"errors"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/internal/config"
)

// errNoSimulator refuses --simulate: the Windows build links no simulator
// and no test double (CI checks it with go list -deps), so a release
// binary on a user's machine can only drive the real Windows.
var errNoSimulator = errors.New("--simulate: the Windows build of livedump-agent has no simulated host; run the Linux build with --simulate instead")

func runSimulatedDTraceIfAsked() {}

func simulatedHost(*config.Config, string, string) (host.Host, error) {
	return nil, errNoSimulator
}

func runSimulatedService(context.Context, host.Host, func(context.Context) error) error {
	return errNoSimulator
}
