// Package teststate is the state shared by the Windows test doubles under
// tests/testbin (bcdedit.exe, powershell.exe) and the tests that drive
// them under Wine. The doubles stand where the real programs live
// (C:\windows\system32\...), so the agent code under test runs exactly as on
// Windows; what they report is read from, and what they change is written to,
// the JSON files here, which a test sets up and inspects.
package teststate

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Where the doubles keep their state, inside the Wine prefix's C: drive.
const (
	Dir     = `C:\ProgramData\livedump-test`
	BCDFile = Dir + `\bcd.json`
	WMIFile = Dir + `\wmi.json`
)

// BCD is the {current} boot entry as far as the bcdedit double knows it.
type BCD struct {
	// Dtrace is the dtrace element: nil when it is not set.
	Dtrace *bool `json:"dtrace,omitempty"`
}

// WMI is what the powershell double answers for the agent's WMI queries.
// The zero value is a machine with VBS off and no BitLocker anywhere.
type WMI struct {
	// VBSStatus is Win32_DeviceGuard.VirtualizationBasedSecurityStatus.
	VBSStatus int `json:"vbsStatus"`
	// SecurityServicesRunning is Win32_DeviceGuard.SecurityServicesRunning
	// (2 = memory integrity).
	SecurityServicesRunning []int `json:"securityServicesRunning,omitempty"`
	// DeviceGuardMissing removes the Device Guard class, as on Windows
	// before 10: the query prints nothing.
	DeviceGuardMissing bool `json:"deviceGuardMissing,omitempty"`
	// BitLocker maps a drive ("C:") to its GetProtectionStatus; a drive
	// not listed reports 0 (off).
	BitLocker map[string]int `json:"bitLocker,omitempty"`
	// BitLockerMissing removes the BitLocker WMI namespace, as on a
	// Windows Server without the feature: Get-CimInstance fails with
	// InvalidNamespace, which a script may catch.
	BitLockerMissing bool `json:"bitLockerMissing,omitempty"`
	// Suspended records, per drive, the -RebootCount of the last
	// Suspend-BitLocker.
	Suspended map[string]int `json:"suspended,omitempty"`
}

// Load reads the JSON state at path into v; a missing file leaves v as it
// is, which is how a double starts from its defaults.
func Load(path string, v any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// Save writes v as JSON to path, creating the directory, through a
// temporary file and a rename so that a reader never sees half a file.
func Save(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
