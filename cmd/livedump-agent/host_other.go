//go:build !windows

package main

import (
	"errors"

	"github.com/livedump/livedump/agent/host"
)

func defaultStateDir() string   { return "/var/lib/livedump-agent" }
func defaultConfigFile() string { return "/etc/livedump/agent.yaml" }

// realHost fails: the agent's real host is Windows; elsewhere it can only
// run against the simulated host.
func realHost(string) (host.Host, error) {
	return nil, errors.New("this build runs on Windows only; use --simulate to run against the simulated Windows host")
}
