package host

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readWMI(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "wmi", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseVBSStatusJSON(t *testing.T) {
	for file, want := range map[string]VBSStatus{
		"vbs-running.json":     VBSRunning,
		"vbs-off.json":         VBSOff,
		"vbs-enabled-bom.json": VBSEnabled,
		// No Device Guard class: the script prints nothing.
		"vbs-empty.txt": VBSStatusNone,
		"vbs-blank.txt": VBSStatusNone,
		"vbs-null.json": VBSStatusNone,
	} {
		got, err := ParseVBSStatusJSON(readWMI(t, file))
		if err != nil || got != want {
			t.Errorf("%s: ParseVBSStatusJSON = %v, %v; want %v", file, got, err, want)
		}
	}
	for _, file := range []string{"vbs-out-of-range.json", "vbs-array.json", "vbs-other-object.json", "vbs-table.txt"} {
		got, err := ParseVBSStatusJSON(readWMI(t, file))
		if !errors.Is(err, ErrWMIUnreadable) {
			t.Errorf("%s: ParseVBSStatusJSON = %v, %v; want ErrWMIUnreadable", file, got, err)
		}
	}
}

func TestParseBitLockerStatusJSON(t *testing.T) {
	for file, want := range map[string]BitLockerStatus{
		"bitlocker-on.json":      BitLockerOn,
		"bitlocker-off.json":     BitLockerOff,
		"bitlocker-unknown.json": BitLockerUnknown,
		// A Server without the BitLocker feature: no WMI namespace,
		// which the script turns into this object. It is off, not an
		// error (the old script failed with "Invalid namespace").
		"bitlocker-absent.json": BitLockerOff,
	} {
		got, err := ParseBitLockerStatusJSON(readWMI(t, file))
		if err != nil || got != want {
			t.Errorf("%s: ParseBitLockerStatusJSON = %v, %v; want %v", file, got, err, want)
		}
	}
	for file, want := range map[string]string{
		// An empty answer must never read as "off".
		"bitlocker-empty.txt":           "no output",
		"bitlocker-failed.json":         "GetProtectionStatus failed with 0x80310000",
		"bitlocker-no-returnvalue.json": "no ReturnValue",
		"bitlocker-string.json":         "unreadable",
		"bitlocker-fraction.json":       "ProtectionStatus 1.5",
		"bitlocker-error-text.txt":      "want one JSON object",
		"bitlocker-two-objects.json":    "unreadable",
		"vbs-running.json":              "none of ProtectionStatus, ReturnValue",
		"bitlocker-feature-odd.json":    "BitLockerFeature",
	} {
		got, err := ParseBitLockerStatusJSON(readWMI(t, file))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: ParseBitLockerStatusJSON = %v, %v; want error containing %q", file, got, err, want)
		}
	}
}

func TestWMIScripts(t *testing.T) {
	bl, err := BitLockerStatusScript("C:")
	if err != nil {
		t.Fatal(err)
	}
	sus, err := SuspendBitLockerScript("D:", 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		script string
		want   []string
	}{
		{VBSStatusScript(), []string{`-Namespace root\Microsoft\Windows\DeviceGuard -ClassName Win32_DeviceGuard`, "VirtualizationBasedSecurityStatus", "ConvertTo-Json -Compress"}},
		{bl, []string{`$d='C:';`, `-Namespace root\CIMV2\Security\MicrosoftVolumeEncryption -ClassName Win32_EncryptableVolume`, "Invoke-CimMethod -MethodName GetProtectionStatus", "ConvertTo-Json -Compress"}},
		{sus, []string{`$d='D:';`, "Suspend-BitLocker -MountPoint $d -RebootCount 2|", "GetProtectionStatus", "ConvertTo-Json -Compress"}},
		{bl, []string{"'InvalidNamespace','InvalidClass'", "BitLockerFeature='absent'"}},
		{SecurityServicesScript(), []string{`-Namespace root\Microsoft\Windows\DeviceGuard -ClassName Win32_DeviceGuard`, "SecurityServicesRunning=@($g.SecurityServicesRunning)", "ConvertTo-Json -Compress"}},
	} {
		for _, w := range c.want {
			if !strings.Contains(c.script, w) {
				t.Errorf("script %q lacks %q", c.script, w)
			}
		}
		// A double quote would have to survive Windows command-line
		// quoting; newlines would end -Command early.
		if strings.ContainsAny(c.script, "\"\r\n") {
			t.Errorf("script %q contains a double quote or a line break", c.script)
		}
		if !strings.HasPrefix(c.script, psPrelude) {
			t.Errorf("script %q does not start with the prelude", c.script)
		}
	}
	args := PowerShellArgs("x")
	if strings.Join(args, " ") != "-NoProfile -NonInteractive -ExecutionPolicy Bypass -Command x" {
		t.Errorf("PowerShellArgs = %q", args)
	}
}

func TestWMIScriptValidation(t *testing.T) {
	for _, v := range []string{"", "C", "c:", "C:\\", "CC:", "1:", "C;", "C: ", "C:'", "Ä:", "C:';Remove-Item x;'"} {
		if _, err := BitLockerStatusScript(v); err == nil {
			t.Errorf("BitLockerStatusScript(%q) accepted", v)
		}
		if _, err := SuspendBitLockerScript(v, 1); err == nil {
			t.Errorf("SuspendBitLockerScript(%q) accepted", v)
		}
	}
	for _, v := range []string{"A:", "C:", "Z:"} {
		if err := ValidateVolume(v); err != nil {
			t.Errorf("ValidateVolume(%q) = %v", v, err)
		}
	}
	for _, n := range []int{-1, 0, MaxBitLockerRebootCount + 1, 1000} {
		if _, err := SuspendBitLockerScript("C:", n); err == nil || !strings.Contains(err.Error(), "reboot count") {
			t.Errorf("SuspendBitLockerScript(C:, %d) err = %v, want a reboot count error", n, err)
		}
	}
	for _, n := range []int{1, MaxBitLockerRebootCount} {
		if _, err := SuspendBitLockerScript("C:", n); err != nil {
			t.Errorf("SuspendBitLockerScript(C:, %d) = %v", n, err)
		}
	}
}
