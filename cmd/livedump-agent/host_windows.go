//go:build windows

package main

import (
	"os"
	"path/filepath"

	"golang.org/x/sys/windows"

	"github.com/livedump/livedump/agent/host"
)

// programData is %ProgramData%, asked of the shell rather than read from
// the environment, which a service may not have (or, under Wine, has
// pointing elsewhere).
func programData() string {
	if d, err := windows.KnownFolderPath(windows.FOLDERID_ProgramData, 0); err == nil && d != "" {
		return d
	}
	if d := os.Getenv("ProgramData"); d != "" {
		return d
	}
	return `C:\ProgramData`
}

func defaultStateDir() string   { return filepath.Join(programData(), "livedump") }
func defaultConfigFile() string { return filepath.Join(programData(), "livedump", "agent.yaml") }

// realHost is the Windows host the agent runs on; dtracePath is the
// dtrace_path setting.
func realHost(dtracePath string) (host.Host, error) {
	w := host.NewWindows()
	w.DTracePath = dtracePath
	return w, nil
}
