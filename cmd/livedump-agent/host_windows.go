//go:build windows

package main

import (
	"os"
	"path/filepath"

	"github.com/livedump/livedump/agent/host"
)

func programData() string {
	if d := os.Getenv("ProgramData"); d != "" {
		return d
	}
	return `C:\ProgramData`
}

func defaultStateDir() string   { return filepath.Join(programData(), "livedump") }
func defaultConfigFile() string { return filepath.Join(programData(), "livedump", "agent.yaml") }

// realHost is the Windows host the agent runs on.
func realHost() (host.Host, error) { return host.NewWindows(), nil }
