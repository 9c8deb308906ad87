//go:build windows

package host

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"golang.org/x/sys/windows"
)

// The Windows host drives bcdedit.exe, powershell.exe, msiexec.exe and
// shutdown.exe where Windows offers no API the agent can call directly. Each
// runs from the system directory by absolute path, never through PATH, so a
// planted bcdedit.exe elsewhere is never run with the agent's rights; the
// argument lists come from the pure functions in bcdedit.go, wmi.go and
// reboot.go.

// Time limits for tools that finish in seconds on a healthy machine, so that
// a hung WMI provider cannot hang the agent. msiexec has none: an install
// may take long, and killing it halfway is worse than waiting; the caller's
// context governs it.
const (
	bcdeditTimeout    = time.Minute
	powershellTimeout = 2 * time.Minute
	shutdownTimeout   = time.Minute
)

// maxToolOutput bounds what is kept of a tool's stdout and stderr; the
// outputs parsed here are a few hundred bytes.
const maxToolOutput = 1 << 20

// systemTool returns the absolute path of a program under the system
// directory (`%SystemRoot%\System32`), taken from GetSystemDirectory rather
// than from the environment, which the agent does not trust for this.
func systemTool(rel string) (string, error) {
	dir, err := windows.GetSystemDirectory()
	if err != nil {
		return "", fmt.Errorf("GetSystemDirectory: %w", err)
	}
	return filepath.Join(dir, rel), nil
}

// toolResult is how a tool ended: its exit code and its output, decoded.
type toolResult struct {
	code           int
	stdout, stderr string
}

// firstLine returns the first non-empty line of the output, stderr first:
// enough for an error message, whatever the display language.
func (r toolResult) firstLine() string {
	for _, s := range []string{r.stderr, r.stdout} {
		for _, l := range strings.Split(s, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				return l
			}
		}
	}
	return "no output"
}

// runTool runs the program at exe (an absolute path) with a hidden window
// and no stdin, and returns its exit code and output. err is set only when
// the program could not be started or was stopped by ctx or limit (0 means
// no limit of its own); a non-zero exit is a result, not an error.
func runTool(ctx context.Context, limit time.Duration, exe string, args []string) (toolResult, error) {
	name := strings.TrimSuffix(filepath.Base(exe), ".exe")
	if limit > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{HideWindow: true}
	// A grandchild that inherited the pipes must not keep Wait waiting.
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr capped
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		return toolResult{}, fmt.Errorf("%s: %w", name, ctx.Err())
	}
	res := toolResult{stdout: decodeOutput(stdout.Bytes()), stderr: decodeOutput(stderr.Bytes())}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		res.code = exit.ExitCode()
	case err != nil:
		return toolResult{}, fmt.Errorf("%s: %w", name, err)
	}
	return res, nil
}

// capped is a bytes.Buffer that keeps the first maxToolOutput bytes and
// drops the rest, so a runaway tool cannot exhaust the agent's memory.
type capped struct{ bytes.Buffer }

func (c *capped) Write(p []byte) (int, error) {
	if room := maxToolOutput - c.Len(); room > 0 {
		c.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// cpOEM is CP_OEMCP: the console code page console tools write in when
// their output is a pipe.
const cpOEM = 1

// decodeOutput turns a console tool's output into UTF-8. ASCII and UTF-8
// (the "Unicode UTF-8" system setting) pass unchanged; anything else is read
// in the OEM code page, so that a localized bcdedit's "Sí" is not misread.
func decodeOutput(b []byte) string {
	if utf8.Valid(b) {
		return strings.ReplaceAll(string(b), "\r\n", "\n")
	}
	n, err := windows.MultiByteToWideChar(cpOEM, 0, &b[0], int32(len(b)), nil, 0)
	if err != nil || n <= 0 {
		return strings.ToValidUTF8(string(b), "\uFFFD")
	}
	w := make([]uint16, n)
	if n, err = windows.MultiByteToWideChar(cpOEM, 0, &b[0], int32(len(b)), &w[0], n); err != nil {
		return strings.ToValidUTF8(string(b), "\uFFFD")
	}
	return strings.ReplaceAll(string(utf16.Decode(w[:n])), "\r\n", "\n")
}

// bcdedit runs bcdedit.exe with args and returns its output; a non-zero exit
// is an error with the code and bcdedit's first line.
func bcdedit(ctx context.Context, args []string) (string, error) {
	exe, err := systemTool("bcdedit.exe")
	if err != nil {
		return "", fmt.Errorf("bcdedit: %w", err)
	}
	cmdline := "bcdedit " + strings.Join(args, " ")
	r, err := runTool(ctx, bcdeditTimeout, exe, args)
	if err != nil {
		return "", fmt.Errorf("%s: %w", cmdline, err)
	}
	if r.code != 0 {
		return "", fmt.Errorf("%s: exit code %d: %s", cmdline, r.code, r.firstLine())
	}
	return r.stdout, nil
}

// BCDDtrace reads the dtrace element of {current} from bcdedit /enum.
func (*Windows) BCDDtrace(ctx context.Context) (BCDValue, error) {
	out, err := bcdedit(ctx, BCDEnumArgs())
	if err != nil {
		return BCDValue{}, err
	}
	v, err := ParseBCDDtrace(out)
	if err != nil {
		return BCDValue{}, fmt.Errorf("bcdedit %s: %w", strings.Join(BCDEnumArgs(), " "), err)
	}
	return v, nil
}

// SetBCDDtrace sets the dtrace element of {current}.
func (*Windows) SetBCDDtrace(ctx context.Context, on bool) error {
	_, err := bcdedit(ctx, BCDSetArgs(on))
	return err
}

// DeleteBCDDtrace removes the dtrace element of {current}. When it is not
// set the result wraps ErrNotExist: bcdedit's own "element not found" is
// localized, so the element is looked up first instead of parsing that.
func (w *Windows) DeleteBCDDtrace(ctx context.Context) error {
	v, err := w.BCDDtrace(ctx)
	if err != nil {
		return err
	}
	if !v.Present {
		return fmt.Errorf("bcdedit: the dtrace element of {current} is not set: %w", ErrNotExist)
	}
	_, err = bcdedit(ctx, BCDDeleteArgs())
	return err
}

// powershell runs script with Windows PowerShell and returns what it
// printed; a non-zero exit is an error with the code and the first line.
func powershell(ctx context.Context, what, script string) ([]byte, error) {
	exe, err := systemTool(`WindowsPowerShell\v1.0\powershell.exe`)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	r, err := runTool(ctx, powershellTimeout, exe, PowerShellArgs(script))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if r.code != 0 {
		return nil, fmt.Errorf("%s: powershell exit code %d: %s", what, r.code, r.firstLine())
	}
	return []byte(r.stdout), nil
}

// VBSStatus queries Win32_DeviceGuard through PowerShell.
func (*Windows) VBSStatus(ctx context.Context) (VBSStatus, error) {
	out, err := powershell(ctx, "VBS status", VBSStatusScript())
	if err != nil {
		return VBSStatusNone, err
	}
	s, err := ParseVBSStatusJSON(out)
	if err != nil {
		return VBSStatusNone, fmt.Errorf("VBS status: %w", err)
	}
	return s, nil
}

// SecurityServicesRunning queries Win32_DeviceGuard through PowerShell.
func (*Windows) SecurityServicesRunning(ctx context.Context) (SecurityServices, error) {
	out, err := powershell(ctx, "security services", SecurityServicesScript())
	if err != nil {
		return SecurityServices{}, err
	}
	s, err := ParseSecurityServicesJSON(out)
	if err != nil {
		return SecurityServices{}, fmt.Errorf("security services: %w", err)
	}
	return s, nil
}

// BitLockerStatus queries Win32_EncryptableVolume.GetProtectionStatus of
// volume through PowerShell.
func (*Windows) BitLockerStatus(ctx context.Context, volume string) (BitLockerStatus, error) {
	script, err := BitLockerStatusScript(volume)
	if err != nil {
		return BitLockerUnknown, err
	}
	what := "BitLocker status of " + volume
	out, err := powershell(ctx, what, script)
	if err != nil {
		return BitLockerUnknown, err
	}
	s, err := ParseBitLockerStatusJSON(out)
	if err != nil {
		return BitLockerUnknown, fmt.Errorf("%s: %w", what, err)
	}
	return s, nil
}

// SuspendBitLocker runs Suspend-BitLocker and checks that the volume then
// reports protection off, the state a suspended volume is in.
func (*Windows) SuspendBitLocker(ctx context.Context, volume string, rebootCount int) error {
	script, err := SuspendBitLockerScript(volume, rebootCount)
	if err != nil {
		return err
	}
	what := "suspend BitLocker on " + volume
	out, err := powershell(ctx, what, script)
	if err != nil {
		return err
	}
	s, err := ParseBitLockerStatusJSON(out)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if s != BitLockerOff {
		return fmt.Errorf("%s: protection is %s after Suspend-BitLocker, want off", what, s)
	}
	return nil
}

// InstallMSI runs msiexec /i quietly and returns its exit code.
func (*Windows) InstallMSI(ctx context.Context, msi, log string) (int, error) {
	return msiexec(ctx, true, msi, log)
}

// UninstallMSI runs msiexec /x quietly and returns its exit code.
func (*Windows) UninstallMSI(ctx context.Context, msi, log string) (int, error) {
	return msiexec(ctx, false, msi, log)
}

// UninstallProduct runs msiexec /x {ProductCode} quietly and returns its
// exit code.
func (*Windows) UninstallProduct(ctx context.Context, code, log string) (int, error) {
	args, err := MSIUninstallProductArgs(code, log)
	if err != nil {
		return -1, err
	}
	exe, err := systemTool("msiexec.exe")
	if err != nil {
		return -1, fmt.Errorf("msiexec: %w", err)
	}
	r, err := runTool(ctx, 0, exe, args)
	if err != nil {
		return -1, fmt.Errorf("msiexec /x %s: %w", code, err)
	}
	return r.code, nil
}

func msiexec(ctx context.Context, install bool, msi, log string) (int, error) {
	args, err := MSIExecArgs(install, msi, log)
	if err != nil {
		return -1, err
	}
	exe, err := systemTool("msiexec.exe")
	if err != nil {
		return -1, fmt.Errorf("msiexec: %w", err)
	}
	r, err := runTool(ctx, 0, exe, args)
	if err != nil {
		return -1, fmt.Errorf("msiexec %s %s: %w", args[0], msi, err)
	}
	return r.code, nil
}

// FileExists reports whether a file is at path. A directory there is an
// error rather than "no": something is in the way of the file the caller
// expects.
func (*Windows) FileExists(path string) (bool, error) {
	if err := ValidateWindowsPath(path); err != nil {
		return false, err
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	case fi.IsDir():
		return false, fmt.Errorf("%s is a directory, want a file", Quote(path))
	}
	return true, nil
}

// BootTime is now minus the time since boot (GetTickCount64), to the second:
// the tick count and the clock are read one after the other, so finer
// digits would only be noise.
func (*Windows) BootTime(context.Context) (time.Time, error) {
	return time.Now().Add(-windows.DurationSinceBoot()).Round(time.Second), nil
}

// Reboot schedules a restart with shutdown.exe and returns once it is
// scheduled.
func (*Windows) Reboot(ctx context.Context, delay time.Duration, message string) error {
	args, err := ShutdownArgs(delay, message)
	if err != nil {
		return err
	}
	exe, err := systemTool("shutdown.exe")
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	r, err := runTool(ctx, shutdownTimeout, exe, args)
	if err != nil {
		return err
	}
	if r.code != 0 {
		return fmt.Errorf("shutdown /r: exit code %d: %s", r.code, r.firstLine())
	}
	return nil
}
