package host

import (
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"
)

// This file holds what leads to, or waits for, a reboot and needs no
// Windows: the pending-reboot check over any Registry, and the validated
// argument lists of shutdown.exe and of msiexec.exe (whose 3010 means
// "installed, reboot required").

// Where Windows records that it needs a reboot. None of this is an official
// API, but it is what servicing tools have checked for years.
const (
	// CBSRebootPendingKey exists while Component Based Servicing (updates,
	// optional features) waits for a reboot.
	CBSRebootPendingKey = `HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending`
	// WURebootRequiredKey exists while Windows Update waits for a reboot.
	WURebootRequiredKey = `HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired`
	// SessionManagerKey holds PendingFileRenameOperations, the files that
	// installers asked to replace or delete at the next boot.
	SessionManagerKey = `HKLM\SYSTEM\CurrentControlSet\Control\Session Manager`
	// PendingFileRenameValue is the value under SessionManagerKey.
	PendingFileRenameValue = "PendingFileRenameOperations"
)

// RegistryReader is the read-only part of Registry.
type RegistryReader interface {
	GetValue(key, name string) (Value, error)
	KeyExists(key string) (bool, error)
}

// PendingReboot reports whether Windows is waiting for a reboot, with one
// short reason per signal found. The agent checks it before changing boot
// configuration and before rebooting, so that it neither hides an unrelated
// pending reboot in its own nor surprises an update in progress.
func PendingReboot(r RegistryReader) (pending bool, reasons []string, err error) {
	for _, k := range []struct{ key, reason string }{
		{CBSRebootPendingKey, "component servicing (CBS) is waiting for a reboot"},
		{WURebootRequiredKey, "Windows Update is waiting for a reboot"},
	} {
		ok, err := r.KeyExists(k.key)
		if err != nil {
			return false, nil, fmt.Errorf("pending reboot: %w", err)
		}
		if ok {
			reasons = append(reasons, k.reason)
		}
	}
	v, err := r.GetValue(SessionManagerKey, PendingFileRenameValue)
	switch {
	case errors.Is(err, ErrNotExist):
	case err != nil:
		return false, nil, fmt.Errorf("pending reboot: %w", err)
	case !emptyValue(v):
		reasons = append(reasons, "file renames are queued for the next boot (PendingFileRenameOperations)")
	}
	return len(reasons) > 0, reasons, nil
}

// emptyValue reports whether v holds nothing: Windows leaves an empty
// PendingFileRenameOperations behind once the renames are done.
func emptyValue(v Value) bool {
	switch v.Type {
	case MultiString:
		for _, s := range v.Strs {
			if s != "" {
				return false
			}
		}
		return true
	case String, ExpandString:
		return v.Str == ""
	}
	return v.Num == 0
}

// Bounds of Reboot. shutdown.exe itself allows up to ten years of delay;
// the agent schedules reboots for maintenance now, not later.
const (
	// MaxRebootDelay is the longest delay Reboot accepts.
	MaxRebootDelay = 600 * time.Second
	// MaxRebootMessage is shutdown.exe's limit for /c, in characters.
	MaxRebootMessage = 512
)

// ValidateRebootDelay reports whether d is a delay Reboot accepts
// (0..MaxRebootDelay).
func ValidateRebootDelay(d time.Duration) error {
	if d < 0 || d > MaxRebootDelay {
		return fmt.Errorf("reboot delay %s: want 0s..%s", d, MaxRebootDelay)
	}
	return nil
}

// ValidateRebootMessage reports whether msg may be shown to signed-in users
// by shutdown.exe: at most MaxRebootMessage characters of letters, digits,
// spaces and .,:;!?'()- only. It is an allow-list because the message may
// come from the controller and ends up on a command line.
func ValidateRebootMessage(msg string) error {
	if !utf8.ValidString(msg) {
		return fmt.Errorf("reboot message: not valid UTF-8")
	}
	if n := utf8.RuneCountInString(msg); n > MaxRebootMessage {
		return fmt.Errorf("reboot message: %d characters, at most %d allowed", n, MaxRebootMessage)
	}
	for _, c := range msg {
		if unicode.IsLetter(c) || unicode.IsDigit(c) || c == ' ' {
			continue
		}
		switch c {
		case '.', ',', ':', ';', '!', '?', '\'', '(', ')', '-':
			continue
		}
		return fmt.Errorf("reboot message %s: character %q is not allowed", Quote(msg), c)
	}
	return nil
}

// ShutdownArgs are the shutdown.exe arguments of Reboot: restart after delay
// (rounded up to whole seconds, never earlier than asked), showing msg if it
// is not empty, recorded as a planned application maintenance (p:4:1) so the
// event log does not report an unexpected shutdown.
func ShutdownArgs(delay time.Duration, msg string) ([]string, error) {
	if err := ValidateRebootDelay(delay); err != nil {
		return nil, err
	}
	if err := ValidateRebootMessage(msg); err != nil {
		return nil, err
	}
	secs := int64((delay + time.Second - 1) / time.Second)
	args := []string{"/r", "/t", strconv.FormatInt(secs, 10)}
	if msg != "" {
		args = append(args, "/c", msg)
	}
	return append(args, "/d", "p:4:1"), nil
}

// ValidateWindowsPath reports whether p is an absolute Windows path in drive
// letter form (`C:\...`) with no quotes or control characters: the only form
// the agent passes to msiexec or checks for existence. Relative paths would
// depend on the service's working directory, and UNC or device paths
// (`\\server\x`, `\\?\`) have no business here.
func ValidateWindowsPath(p string) error {
	if len(p) < 4 || !isLetter(p[0]) || p[1] != ':' || p[2] != '\\' {
		return fmt.Errorf("path %s: want an absolute path such as C:\\dir\\file", Quote(p))
	}
	if !utf8.ValidString(p) {
		return fmt.Errorf("path %s: not valid UTF-8", Quote(p))
	}
	for _, c := range p {
		if c < ' ' || c == 0x7f || c == '"' || (c >= 0x80 && c < 0xa0) {
			return fmt.Errorf("path %s: character %q is not allowed", Quote(p), c)
		}
	}
	return nil
}

func isLetter(c byte) bool { return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' }

// MSIExecArgs are the msiexec.exe arguments that install (/i) or uninstall
// (/x) msi quietly, without letting it reboot the machine, with a verbose log
// at log. Both paths are validated.
func MSIExecArgs(install bool, msi, log string) ([]string, error) {
	if err := ValidateWindowsPath(msi); err != nil {
		return nil, fmt.Errorf("msi: %w", err)
	}
	if err := ValidateWindowsPath(log); err != nil {
		return nil, fmt.Errorf("msi log: %w", err)
	}
	op := "/x"
	if install {
		op = "/i"
	}
	return []string{op, msi, "/qn", "/norestart", "/L*V", log}, nil
}
