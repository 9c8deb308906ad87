//go:build windows

package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// DTraceCommand prepares dtrace.exe from where the DTrace MSI installs it
// (ProgramFilesDir\DTrace\dtrace.exe, read from the registry rather than
// an environment variable a service may not have).
func (w *Windows) DTraceCommand(ctx context.Context, args, env []string) (*exec.Cmd, error) {
	pf, err := w.GetValue(`HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion`, "ProgramFilesDir")
	if err != nil {
		return nil, fmt.Errorf("locate dtrace.exe: ProgramFilesDir: %w", err)
	}
	path := pf.Str + `\DTrace\dtrace.exe`
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: not found (DTrace is not installed)", path)
		}
		return nil, err
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{HideWindow: true}
	return cmd, nil
}

// LiveDumpDir is where Windows writes live kernel dumps on this machine.
func (w *Windows) LiveDumpDir() (string, error) { return LiveDumpWinPath(w) }
