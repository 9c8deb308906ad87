package host

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// This file holds the WMI side of the Windows host that needs no Windows: the
// PowerShell scripts it sends, the argument lists, the validation of what
// reaches a command line, and the parsers of the JSON the scripts print. The
// scripts print JSON (ConvertTo-Json -Compress) rather than formatted tables
// so that nothing here depends on the display language.

// MaxBitLockerRebootCount is the largest -RebootCount Suspend-BitLocker
// accepts. 0, which Suspend-BitLocker takes as "until resumed by hand", is
// refused: a suspend the agent asks for must end on its own.
const MaxBitLockerRebootCount = 15

// ValidateVolume reports whether volume is a drive such as "C:": one
// upper-case letter and a colon. Nothing else may reach a PowerShell command
// line, so the check is an allow-list shared by every Host.
func ValidateVolume(volume string) error {
	if len(volume) != 2 || volume[0] < 'A' || volume[0] > 'Z' || volume[1] != ':' {
		return fmt.Errorf("volume %s: want a drive letter such as \"C:\"", Quote(volume))
	}
	return nil
}

// ValidateBitLockerRebootCount reports whether n is a reboot count the agent
// may pass to Suspend-BitLocker (1..MaxBitLockerRebootCount).
func ValidateBitLockerRebootCount(n int) error {
	if n < 1 || n > MaxBitLockerRebootCount {
		return fmt.Errorf("BitLocker reboot count %d: want 1..%d", n, MaxBitLockerRebootCount)
	}
	return nil
}

// psPrelude makes every error terminating, so powershell.exe exits non-zero
// instead of printing an error and carrying on, and silences the progress
// stream, which would otherwise be rendered into the captured output.
const psPrelude = `$ErrorActionPreference='Stop';$ProgressPreference='SilentlyContinue';`

// vbsScript prints {"VirtualizationBasedSecurityStatus":N}, or nothing when
// the Device Guard namespace or class does not exist (Windows before 10, some
// Server editions): that is "not reported", not a failure. Any other error
// (access denied, WMI broken) fails the script.
const vbsScript = psPrelude +
	`try{$g=Get-CimInstance -Namespace root\Microsoft\Windows\DeviceGuard -ClassName Win32_DeviceGuard|Select-Object -First 1}` +
	`catch{if([string]$_.Exception.NativeErrorCode -in 'InvalidNamespace','InvalidClass','NotFound'){exit 0};throw};` +
	`if($g){[ordered]@{VirtualizationBasedSecurityStatus=$g.VirtualizationBasedSecurityStatus}|ConvertTo-Json -Compress}`

// bitLockerQuery is the part of a script that prints
// {"ProtectionStatus":N,"ReturnValue":N} for the volume in $d. The filter is
// written with single quotes only: a double quote would have to survive
// Windows command-line quoting on its way to powershell.exe.
//
// A Windows Server without the BitLocker feature has no
// root\CIMV2\Security\MicrosoftVolumeEncryption namespace: WMI answers
// WBEM_E_INVALID_NAMESPACE (0x8004100E, "Invalid namespace",
// https://learn.microsoft.com/en-us/windows/win32/wmisdk/wmi-error-constants),
// which the CIM cmdlets report as NativeErrorCode InvalidNamespace. BitLocker
// is an optional feature on Server, added with Install-WindowsFeature
// BitLocker (https://learn.microsoft.com/en-us/windows/security/operating-system-security/data-protection/bitlocker/install-server),
// so a missing namespace means no volume can be protected: the script
// prints {"BitLockerFeature":"absent"} and the parser reads BitLocker off.
// A missing class (InvalidClass) is treated alike; any other error fails.
const bitLockerQuery = `try{$v=Get-CimInstance -Namespace root\CIMV2\Security\MicrosoftVolumeEncryption -ClassName Win32_EncryptableVolume -Filter ('DriveLetter='''+$d+''')}` +
	`catch{if([string]$_.Exception.NativeErrorCode -in 'InvalidNamespace','InvalidClass'){[ordered]@{BitLockerFeature='absent'}|ConvertTo-Json -Compress;exit 0};throw};` +
	`if(-not $v){throw ('no encryptable volume '+$d)};` +
	`$r=$v|Invoke-CimMethod -MethodName GetProtectionStatus;` +
	`[ordered]@{ProtectionStatus=$r.ProtectionStatus;ReturnValue=$r.ReturnValue}|ConvertTo-Json -Compress`

// VBSStatusScript is the PowerShell script behind VBSStatus.
func VBSStatusScript() string { return vbsScript }

// BitLockerStatusScript is the PowerShell script behind BitLockerStatus. It
// validates volume, the only input that reaches the script.
func BitLockerStatusScript(volume string) (string, error) {
	if err := ValidateVolume(volume); err != nil {
		return "", err
	}
	return psPrelude + `$d='` + volume + `';` + bitLockerQuery, nil
}

// SuspendBitLockerScript is the PowerShell script behind SuspendBitLocker: it
// suspends protection for rebootCount reboots and then prints the protection
// status the way BitLockerStatusScript does, so the caller can check that the
// suspend took.
func SuspendBitLockerScript(volume string, rebootCount int) (string, error) {
	if err := ValidateVolume(volume); err != nil {
		return "", err
	}
	if err := ValidateBitLockerRebootCount(rebootCount); err != nil {
		return "", err
	}
	return psPrelude + `$d='` + volume + `';` +
		`Suspend-BitLocker -MountPoint $d -RebootCount ` + strconv.Itoa(rebootCount) + `|Out-Null;` +
		bitLockerQuery, nil
}

// PowerShellArgs are the powershell.exe arguments that run script: no
// profile (a user's profile must not change what the agent sees), never
// prompt, and no execution policy getting in the way of a -Command string.
func PowerShellArgs(script string) []string {
	return []string{"-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-Command", script}
}

// ErrWMIUnreadable is wrapped by errors about script output the agent cannot
// interpret.
var ErrWMIUnreadable = errors.New("unreadable WMI output")

// ParseVBSStatusJSON parses the output of VBSStatusScript. Empty output means
// the Device Guard class does not exist, which is VBSStatusNone, as is a
// status the class leaves null; anything that is not one object with a
// documented status is an error.
func ParseVBSStatusJSON(out []byte) (VBSStatus, error) {
	out = trimOutput(out)
	if len(out) == 0 {
		return VBSStatusNone, nil
	}
	var r struct {
		Status *json.Number `json:"VirtualizationBasedSecurityStatus"`
	}
	if err := decodeObject(out, &r, "VirtualizationBasedSecurityStatus"); err != nil {
		return 0, fmt.Errorf("Win32_DeviceGuard: %w", err)
	}
	if r.Status == nil {
		return VBSStatusNone, nil
	}
	n, err := strconv.Atoi(r.Status.String())
	if err != nil || n < int(VBSOff) || n > int(VBSRunning) {
		return 0, fmt.Errorf("Win32_DeviceGuard: %w: VirtualizationBasedSecurityStatus %s, want 0, 1 or 2", ErrWMIUnreadable, r.Status)
	}
	return VBSStatus(n), nil
}

// ParseBitLockerStatusJSON parses the output of BitLockerStatusScript (and
// SuspendBitLockerScript). GetProtectionStatus must have returned S_OK and a
// documented status; empty output (no class, no volume) is an error, since
// "unknown" must never pass for "off".
func ParseBitLockerStatusJSON(out []byte) (BitLockerStatus, error) {
	out = trimOutput(out)
	if len(out) == 0 {
		return 0, fmt.Errorf("Win32_EncryptableVolume: %w: no output (BitLocker WMI class or volume missing)", ErrWMIUnreadable)
	}
	var r struct {
		Status  *json.Number `json:"ProtectionStatus"`
		Return  *json.Number `json:"ReturnValue"`
		Feature *string      `json:"BitLockerFeature"`
	}
	if err := decodeObject(out, &r, "ProtectionStatus", "ReturnValue", "BitLockerFeature"); err != nil {
		return 0, fmt.Errorf("Win32_EncryptableVolume: %w", err)
	}
	if r.Feature != nil {
		// The feature is not installed (see bitLockerQuery): off.
		if *r.Feature != "absent" || r.Status != nil || r.Return != nil {
			return 0, fmt.Errorf("Win32_EncryptableVolume: %w: BitLockerFeature %s", ErrWMIUnreadable, Quote(*r.Feature))
		}
		return BitLockerOff, nil
	}
	if r.Return == nil {
		return 0, fmt.Errorf("Win32_EncryptableVolume: %w: GetProtectionStatus returned no ReturnValue", ErrWMIUnreadable)
	}
	if rv, err := strconv.ParseUint(r.Return.String(), 10, 32); err != nil {
		return 0, fmt.Errorf("Win32_EncryptableVolume: %w: ReturnValue %s", ErrWMIUnreadable, r.Return)
	} else if rv != 0 {
		return 0, fmt.Errorf("Win32_EncryptableVolume: GetProtectionStatus failed with 0x%08X", rv)
	}
	if r.Status == nil {
		return 0, fmt.Errorf("Win32_EncryptableVolume: %w: GetProtectionStatus returned no ProtectionStatus", ErrWMIUnreadable)
	}
	n, err := strconv.Atoi(r.Status.String())
	if err != nil || n < int(BitLockerOff) || n > int(BitLockerUnknown) {
		return 0, fmt.Errorf("Win32_EncryptableVolume: %w: ProtectionStatus %s, want 0, 1 or 2", ErrWMIUnreadable, r.Status)
	}
	return BitLockerStatus(n), nil
}

// trimOutput drops what Windows PowerShell may put around the JSON: a UTF-8
// byte order mark and line ends.
func trimOutput(out []byte) []byte {
	return bytes.TrimSpace(bytes.TrimPrefix(out, []byte("\xef\xbb\xbf")))
}

// decodeObject decodes one JSON object into v, requiring at least one of the
// wanted keys, so that some other object (or an array of several instances)
// is reported rather than read as all-null.
func decodeObject(out []byte, v any, keys ...string) error {
	if out[0] != '{' {
		return fmt.Errorf("%w: want one JSON object, got %s", ErrWMIUnreadable, Quote(clip(string(out))))
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(out, &raw); err != nil {
		return fmt.Errorf("%w: %v", ErrWMIUnreadable, err)
	}
	found := false
	for _, k := range keys {
		if _, ok := raw[k]; ok {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("%w: object has none of %s", ErrWMIUnreadable, strings.Join(keys, ", "))
	}
	d := json.NewDecoder(bytes.NewReader(out))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrWMIUnreadable, err)
	}
	return nil
}

// clip shortens s for an error message.
func clip(s string) string {
	const max = 80
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
