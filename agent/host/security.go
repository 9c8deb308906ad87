package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// This file reads the platform security state that decides whether the
// DTrace driver can load (Secure Boot, memory integrity / HVCI), and finds
// installed MSI products by their Uninstall entries. It needs no Windows:
// the registry goes through the Registry interface and the one WMI query
// (Win32_DeviceGuard.SecurityServicesRunning) through Host.

// Registry locations of the platform security state.
const (
	// SecureBootStateKey holds UEFISecureBootEnabled (REG_DWORD, 1 on,
	// 0 off), which Windows writes at boot from the firmware's SecureBoot
	// variable. No Microsoft Learn reference page for the value was found;
	// it is what Windows 11 readiness checks read, discussed on Microsoft's
	// Tech Community ("SecureBoot Enabled but UEFISecureBootEnabled equals
	// 0": 0 also while the firmware is in Setup Mode, which does not
	// enforce signatures). A legacy-BIOS boot has no value, as
	// Confirm-SecureBootUEFI then says "Cmdlet not supported on this
	// platform" (https://learn.microsoft.com/en-us/powershell/module/secureboot/confirm-securebootuefi).
	// A missing value is therefore "unknown", never "off".
	SecureBootStateKey = `HKLM\SYSTEM\CurrentControlSet\Control\SecureBoot\State`
	// SecureBootValue is the value under SecureBootStateKey.
	SecureBootValue = "UEFISecureBootEnabled"
	// HVCIKey holds Enabled (REG_DWORD): memory integrity (hypervisor-
	// enforced code integrity) is asked for at the next boot. Absent means
	// not enabled, the OS default
	// (https://learn.microsoft.com/en-us/windows/security/hardware-security/enable-virtualization-based-protection-of-code-integrity;
	// unattend HypervisorEnforcedCodeIntegrity: "0 ... This is the OS default").
	HVCIKey = `HKLM\SYSTEM\CurrentControlSet\Control\DeviceGuard\Scenarios\HypervisorEnforcedCodeIntegrity`
	// HVCIValue is the value under HVCIKey.
	HVCIValue = "Enabled"
)

// SecurityServiceHVCI is the SecurityServicesRunning entry of memory
// integrity (Win32_DeviceGuard: 1 Credential Guard, 2 hypervisor enforced
// code integrity; DeviceGuardSoftwareSecure in the PowerShell SDK,
// https://learn.microsoft.com/en-us/dotnet/api/microsoft.powershell.commands.deviceguardsoftwaresecure).
const SecurityServiceHVCI = 2

// SecurityServices is Win32_DeviceGuard.SecurityServicesRunning: the VBS
// services that run now, whatever the registry asks for at the next boot.
type SecurityServices struct {
	// Reported is false when the Device Guard class does not exist
	// (Windows before 10, some Server editions): nothing is known then.
	Reported bool
	Running  []int
}

// HVCI reports whether memory integrity is among the running services.
func (s SecurityServices) HVCI() bool { return slices.Contains(s.Running, SecurityServiceHVCI) }

// State is a platform security feature's state as far as the agent can tell.
type State int

// The states. Unknown is the zero value so that a state nobody read never
// passes for "off".
const (
	StateUnknown State = iota
	StateOff
	StateOn
)

func (s State) String() string {
	switch s {
	case StateOff:
		return "off"
	case StateOn:
		return "on"
	}
	return "unknown"
}

// BootSecurity is what can stop the DTrace driver from loading: users report
// that with Secure Boot and Device Guard (memory integrity) on, every dtrace
// call fails with "DTrace device not available on system"
// (https://github.com/microsoft/DTrace-on-Windows/issues/64), and Microsoft's
// DTrace page says Secure Boot may need to be suspended before bcdedit
// changes the boot configuration
// (https://learn.microsoft.com/en-us/windows-hardware/drivers/devtest/dtrace,
// quoted in MicrosoftDocs/windows-driver-docs#3294).
type BootSecurity struct {
	// SecureBoot is UEFISecureBootEnabled; unknown when the value is
	// missing (legacy BIOS) or not a DWORD.
	SecureBoot State
	// HVCIConfigured is the registry's request for the next boot.
	HVCIConfigured State
	// HVCIRunning is what runs now (SecurityServicesRunning); unknown when
	// Device Guard is not reported.
	HVCIRunning State
}

// HVCI is the memory integrity state in force: what runs when that is
// reported, else what the registry asks for (the harsher reading when the
// machine cannot say).
func (b BootSecurity) HVCI() State {
	if b.HVCIRunning != StateUnknown {
		return b.HVCIRunning
	}
	return b.HVCIConfigured
}

// Notes are the plan's lines about the state, always shown: an operator must
// see these before blaming the agent for a driver that does not load.
func (b BootSecurity) Notes() []string {
	sb := "Secure Boot: " + b.SecureBoot.String()
	switch b.SecureBoot {
	case StateOn:
		sb += " (" + SecureBootValue + "=1); users report that DTrace fails with \"DTrace device not available on system\" until Secure Boot is disabled in the firmware setup (DTrace-on-Windows issue #64); livedump proves the driver works after the reboot"
	case StateUnknown:
		sb += " (" + SecureBootValue + " not present: legacy BIOS boot, or not reported)"
	}
	hv := "memory integrity (HVCI): " + b.HVCI().String()
	switch {
	case b.HVCIRunning == StateUnknown:
		hv += " (configured " + b.HVCIConfigured.String() + "; running state not reported)"
	case b.HVCIConfigured != b.HVCIRunning:
		hv += " (running " + b.HVCIRunning.String() + ", configured " + b.HVCIConfigured.String() + " for the next boot)"
	}
	if b.HVCI() == StateOn || b.HVCIConfigured == StateOn {
		hv += "; users report that DTrace fails with \"DTrace device not available on system\" while Device Guard / memory integrity is on (DTrace-on-Windows issue #64)"
	}
	return []string{sb, hv}
}

// SecuritySource is what ReadBootSecurity needs of a Host.
type SecuritySource interface {
	GetValue(key, name string) (Value, error)
	SecurityServicesRunning(ctx context.Context) (SecurityServices, error)
}

// ReadBootSecurity reads Secure Boot and memory integrity. A missing value
// is a state (unknown or off, as documented above), never an error; errors
// are failures to read at all.
func ReadBootSecurity(ctx context.Context, h SecuritySource) (BootSecurity, error) {
	var b BootSecurity
	var err error
	if b.SecureBoot, err = dwordState(h, SecureBootStateKey, SecureBootValue, StateUnknown); err != nil {
		return BootSecurity{}, err
	}
	if b.HVCIConfigured, err = dwordState(h, HVCIKey, HVCIValue, StateOff); err != nil {
		return BootSecurity{}, err
	}
	svc, err := h.SecurityServicesRunning(ctx)
	if err != nil {
		return BootSecurity{}, fmt.Errorf("security services: %w", err)
	}
	switch {
	case !svc.Reported:
	case svc.HVCI():
		b.HVCIRunning = StateOn
	default:
		b.HVCIRunning = StateOff
	}
	return b, nil
}

// dwordState reads a 0/1 DWORD: absent is the given state, non-zero on,
// anything but a DWORD unknown.
func dwordState(h SecuritySource, key, name string, absent State) (State, error) {
	v, err := h.GetValue(key, name)
	switch {
	case errors.Is(err, ErrNotExist):
		return absent, nil
	case err != nil:
		return StateUnknown, fmt.Errorf("security state: %w", err)
	case v.Type != DWord:
		return StateUnknown, nil
	case v.Num != 0:
		return StateOn, nil
	}
	return StateOff, nil
}

// securityServicesScript prints {"SecurityServicesRunning":[...]}, or nothing
// when the Device Guard namespace or class does not exist, like vbsScript.
const securityServicesScript = psPrelude +
	`try{$g=Get-CimInstance -Namespace root\Microsoft\Windows\DeviceGuard -ClassName Win32_DeviceGuard|Select-Object -First 1}` +
	`catch{if([string]$_.Exception.NativeErrorCode -in 'InvalidNamespace','InvalidClass','NotFound'){exit 0};throw};` +
	`if($g){[ordered]@{SecurityServicesRunning=@($g.SecurityServicesRunning)}|ConvertTo-Json -Compress}`

// SecurityServicesScript is the PowerShell script behind
// SecurityServicesRunning.
func SecurityServicesScript() string { return securityServicesScript }

// ParseSecurityServicesJSON parses the output of SecurityServicesScript.
// Empty output is "not reported"; null entries (a null property wrapped in
// @()) are skipped.
func ParseSecurityServicesJSON(out []byte) (SecurityServices, error) {
	out = trimOutput(out)
	if len(out) == 0 {
		return SecurityServices{}, nil
	}
	var r struct {
		Running json.RawMessage `json:"SecurityServicesRunning"`
	}
	if err := decodeObject(out, &r, "SecurityServicesRunning"); err != nil {
		return SecurityServices{}, fmt.Errorf("Win32_DeviceGuard: %w", err)
	}
	s := SecurityServices{Reported: true, Running: []int{}}
	raw := strings.TrimSpace(string(r.Running))
	if raw == "" || raw == "null" {
		return s, nil
	}
	if raw[0] != '[' {
		raw = "[" + raw + "]" // a lone number, as ConvertTo-Json may unwrap
	}
	var list []*json.Number
	if err := json.Unmarshal([]byte(raw), &list); err != nil {
		return SecurityServices{}, fmt.Errorf("Win32_DeviceGuard: %w: SecurityServicesRunning %s", ErrWMIUnreadable, clip(raw))
	}
	for _, n := range list {
		if n == nil {
			continue
		}
		v, err := strconv.Atoi(n.String())
		if err != nil || v < 0 || v > 255 {
			return SecurityServices{}, fmt.Errorf("Win32_DeviceGuard: %w: SecurityServicesRunning entry %s", ErrWMIUnreadable, n)
		}
		s.Running = append(s.Running, v)
	}
	return s, nil
}

// UninstallKey lists installed products: one subkey per product, named by
// its ProductCode for Windows Installer packages, with DisplayName,
// DisplayVersion and WindowsInstaller=1
// (https://learn.microsoft.com/en-us/windows/win32/msi/uninstall-registry-key).
const UninstallKey = `HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall`

// DTraceProductName is the DisplayName of the DTrace MSI's product.
const DTraceProductName = "DTrace for Windows"

// productCodeRE is a ProductCode as Windows Installer requires it: a GUID in
// braces, upper-case hex (https://learn.microsoft.com/en-us/windows/win32/msi/productcode).
var productCodeRE = regexp.MustCompile(`^\{[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}\}$`)

// ValidateProductCode reports whether code may reach msiexec's command line.
func ValidateProductCode(code string) error {
	if !productCodeRE.MatchString(code) {
		return fmt.Errorf("product code %s: want a GUID such as {12345678-9ABC-DEF0-1234-56789ABCDEF0}", Quote(code))
	}
	return nil
}

// Product is one Windows Installer entry under UninstallKey.
type Product struct {
	Code, Name, Version string
}

// SubKeyLister is the part of Registry that lists and reads keys.
type SubKeyLister interface {
	GetValue(key, name string) (Value, error)
	SubKeys(key string) ([]string, error)
}

// InstalledProducts lists the Windows Installer products registered under
// UninstallKey: subkeys named by a ProductCode with WindowsInstaller=1.
// Other entries (EXE installers, updates) are not products msiexec /x can
// remove and are left out.
func InstalledProducts(r SubKeyLister) ([]Product, error) {
	subs, err := r.SubKeys(UninstallKey)
	if errors.Is(err, ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("installed products: %w", err)
	}
	var out []Product
	for _, s := range subs {
		if ValidateProductCode(s) != nil {
			continue
		}
		k := UninstallKey + `\` + s
		if wi, err := r.GetValue(k, "WindowsInstaller"); err != nil || wi.Type != DWord || wi.Num != 1 {
			continue
		}
		p := Product{Code: s}
		if v, err := r.GetValue(k, "DisplayName"); err == nil && (v.Type == String || v.Type == ExpandString) {
			p.Name = v.Str
		}
		if v, err := r.GetValue(k, "DisplayVersion"); err == nil && (v.Type == String || v.Type == ExpandString) {
			p.Version = v.Str
		}
		out = append(out, p)
	}
	return out, nil
}

// FindProducts returns the installed products whose DisplayName is name,
// compared case-insensitively.
func FindProducts(r SubKeyLister, name string) ([]Product, error) {
	all, err := InstalledProducts(r)
	if err != nil {
		return nil, err
	}
	var out []Product
	for _, p := range all {
		if strings.EqualFold(p.Name, name) {
			out = append(out, p)
		}
	}
	return out, nil
}

// MSIUninstallProductArgs are the msiexec.exe arguments that remove an
// installed product by its ProductCode, quietly, without rebooting, with a
// verbose log. Windows Installer then uses its own cached copy of the
// package, so no MSI file of ours is needed or run.
func MSIUninstallProductArgs(code, log string) ([]string, error) {
	if err := ValidateProductCode(code); err != nil {
		return nil, err
	}
	if err := ValidateWindowsPath(log); err != nil {
		return nil, fmt.Errorf("msi log: %w", err)
	}
	return []string{"/x", code, "/qn", "/norestart", "/L*V", log}, nil
}
