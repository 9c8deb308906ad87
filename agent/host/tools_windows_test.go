//go:build windows

package host_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/registry"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/tests/testbin/teststate"
)

// These tests drive the Windows host through host.NewWindows() the way the
// agent does. Under Wine (.ci/wine/setup, .ci/wine/exec) bcdedit.exe and
// powershell.exe are the test doubles from tests/testbin, installed where
// Windows keeps the real ones, and HKLM is the prefix's own registry; the
// tests that change the boot configuration, BitLocker or the pending-reboot
// markers run only there. On a real machine they skip rather than touch it.

// underWine reports whether the test runs under Wine, whose ntdll exports
// wine_get_version.
func underWine() bool {
	return windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version").Find() == nil
}

func needDoubles(t *testing.T) {
	t.Helper()
	if !underWine() {
		t.Skip("needs Wine: changes boot configuration, BitLocker or reboot markers, so runs only under Wine with the doubles of .ci/wine/setup")
	}
}

// save writes a double's state file and removes it when the test ends, so
// every test starts from the doubles' defaults.
func save(t *testing.T, path string, v any) {
	t.Helper()
	if err := teststate.Save(path, v); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
}

func TestWindowsKeyExists(t *testing.T) {
	h := host.NewWindows()
	for key, want := range map[string]bool{
		host.CurrentVersionKey:                   true,
		`hklm\software\microsoft`:                true,
		`HKLM\SOFTWARE\livedump-no-such-key\sub`: false,
	} {
		got, err := h.KeyExists(key)
		if err != nil || got != want {
			t.Errorf("KeyExists(%q) = %v, %v; want %v", key, got, err, want)
		}
	}
	if ok, err := h.KeyExists(`HKCU\Software`); err == nil || ok {
		t.Errorf("KeyExists(HKCU) = %v, %v; want a validation error", ok, err)
	}
}

func TestWindowsBCD(t *testing.T) {
	needDoubles(t)
	ctx := context.Background()
	h := host.NewWindows()
	save(t, teststate.BCDFile, teststate.BCD{})

	stored := func() *bool {
		t.Helper()
		var st teststate.BCD
		if err := teststate.Load(teststate.BCDFile, &st); err != nil {
			t.Fatal(err)
		}
		return st.Dtrace
	}
	read := func(want host.BCDValue) {
		t.Helper()
		got, err := h.BCDDtrace(ctx)
		if err != nil || got != want {
			t.Fatalf("BCDDtrace = %v, %v; want %v", got, err, want)
		}
	}

	read(host.BCDValue{})
	if err := h.DeleteBCDDtrace(ctx); !errors.Is(err, host.ErrNotExist) {
		t.Fatalf("DeleteBCDDtrace when not set: err = %v, want ErrNotExist", err)
	}
	if err := h.SetBCDDtrace(ctx, true); err != nil {
		t.Fatal(err)
	}
	if p := stored(); p == nil || !*p {
		t.Fatalf("after SetBCDDtrace(true) the double stores %v", p)
	}
	read(host.BCDValue{Present: true, On: true})
	if err := h.SetBCDDtrace(ctx, false); err != nil {
		t.Fatal(err)
	}
	read(host.BCDValue{Present: true, On: false})
	if err := h.DeleteBCDDtrace(ctx); err != nil {
		t.Fatal(err)
	}
	if p := stored(); p != nil {
		t.Fatalf("after DeleteBCDDtrace the double stores %v", *p)
	}
	read(host.BCDValue{})

	// A failing bcdedit is reported with its exit code and first line.
	if err := os.WriteFile(teststate.BCDFile, []byte("not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := h.BCDDtrace(ctx)
	if err == nil || !strings.Contains(err.Error(), "bcdedit /enum {current}: exit code 1: ") || !strings.Contains(err.Error(), "bcd.json") {
		t.Errorf("BCDDtrace with a broken store: err = %v, want exit code and bcdedit's message", err)
	}
}

func TestWindowsWMI(t *testing.T) {
	needDoubles(t)
	ctx := context.Background()
	h := host.NewWindows()
	os.Remove(teststate.WMIFile)

	// The doubles' defaults: VBS off, no BitLocker.
	if s, err := h.VBSStatus(ctx); err != nil || s != host.VBSOff {
		t.Errorf("VBSStatus = %v, %v; want off", s, err)
	}
	if s, err := h.BitLockerStatus(ctx, "C:"); err != nil || s != host.BitLockerOff {
		t.Errorf("BitLockerStatus(C:) = %v, %v; want off", s, err)
	}

	save(t, teststate.WMIFile, teststate.WMI{VBSStatus: 2, SecurityServicesRunning: []int{1, 2}, BitLocker: map[string]int{"C:": 1, "E:": 2}})
	if s, err := h.VBSStatus(ctx); err != nil || s != host.VBSRunning {
		t.Errorf("VBSStatus = %v, %v; want running", s, err)
	}
	if s, err := h.SecurityServicesRunning(ctx); err != nil || !s.Reported || !s.HVCI() {
		t.Errorf("SecurityServicesRunning = %+v, %v; want memory integrity running", s, err)
	}
	for vol, want := range map[string]host.BitLockerStatus{"C:": host.BitLockerOn, "D:": host.BitLockerOff, "E:": host.BitLockerUnknown} {
		if s, err := h.BitLockerStatus(ctx, vol); err != nil || s != want {
			t.Errorf("BitLockerStatus(%s) = %v, %v; want %v", vol, s, err, want)
		}
	}

	// Suspending reaches the double with the right volume and count, and
	// the volume then reads off.
	if err := h.SuspendBitLocker(ctx, "C:", 2); err != nil {
		t.Fatal(err)
	}
	var st teststate.WMI
	if err := teststate.Load(teststate.WMIFile, &st); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(st.Suspended, map[string]int{"C:": 2}) {
		t.Errorf("the double recorded suspends %v, want C: for 2 reboots", st.Suspended)
	}
	if s, err := h.BitLockerStatus(ctx, "C:"); err != nil || s != host.BitLockerOff {
		t.Errorf("BitLockerStatus(C:) after suspend = %v, %v; want off", s, err)
	}

	// Invalid input never reaches PowerShell.
	if _, err := h.BitLockerStatus(ctx, "c:"); err == nil || !strings.Contains(err.Error(), "drive letter") {
		t.Errorf("BitLockerStatus(c:) err = %v, want a volume error", err)
	}
	if err := h.SuspendBitLocker(ctx, "C:", 0); err == nil || !strings.Contains(err.Error(), "reboot count") {
		t.Errorf("SuspendBitLocker(C:, 0) err = %v, want a reboot count error", err)
	}

	// No Device Guard class is "not reported". No BitLocker namespace (a
	// Windows Server without the feature, WBEM_E_INVALID_NAMESPACE) is
	// BitLocker off: the script catches InvalidNamespace. (It used to be
	// an error, "powershell exit code 1: Get-CimInstance : Invalid
	// namespace", which blocked every Server without the feature.)
	save(t, teststate.WMIFile, teststate.WMI{DeviceGuardMissing: true, BitLockerMissing: true})
	if s, err := h.VBSStatus(ctx); err != nil || s != host.VBSStatusNone {
		t.Errorf("VBSStatus without Device Guard = %v, %v; want none", s, err)
	}
	if s, err := h.SecurityServicesRunning(ctx); err != nil || s.Reported {
		t.Errorf("SecurityServicesRunning without Device Guard = %+v, %v; want not reported", s, err)
	}
	if s, err := h.BitLockerStatus(ctx, "C:"); err != nil || s != host.BitLockerOff {
		t.Errorf("BitLockerStatus without the BitLocker feature = %v, %v; want off", s, err)
	}
	if err := h.SuspendBitLocker(ctx, "C:", 1); err == nil || !strings.Contains(err.Error(), "powershell exit code 1") {
		t.Errorf("SuspendBitLocker without BitLocker: err = %v", err)
	}
}

func TestWindowsFileExists(t *testing.T) {
	h := host.NewWindows()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := h.FileExists(self); err != nil || !ok {
		t.Errorf("FileExists(%s) = %v, %v; want true", self, ok, err)
	}
	missing := filepath.Join(filepath.Dir(self), "livedump-no-such-file.exe")
	if ok, err := h.FileExists(missing); err != nil || ok {
		t.Errorf("FileExists(%s) = %v, %v; want false", missing, ok, err)
	}
	sys, err := windows.GetSystemDirectory()
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := h.FileExists(sys); err == nil || ok {
		t.Errorf("FileExists(%s) = %v, %v; want a directory error", sys, ok, err)
	}
	if ok, err := h.FileExists(filepath.Join(sys, "kernel32.dll")); err != nil || !ok {
		t.Errorf("FileExists(kernel32.dll) = %v, %v; want true", ok, err)
	}
	for _, p := range []string{"dtrace.exe", `\Windows\notepad.exe`, `C:\a"b`} {
		if ok, err := h.FileExists(p); err == nil || ok {
			t.Errorf("FileExists(%q) = %v, %v; want a path error", p, ok, err)
		}
	}
}

func TestWindowsBootTime(t *testing.T) {
	h := host.NewWindows()
	bt, err := h.BootTime(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	t.Logf("boot time %s (up %s)", bt, now.Sub(bt).Round(time.Second))
	if bt.After(now.Add(time.Second)) || now.Sub(bt) > 366*24*time.Hour {
		t.Errorf("BootTime = %s, now %s: not in the past year", bt, now)
	}
	bt2, _ := h.BootTime(context.Background())
	if d := bt2.Sub(bt); d < -time.Second || d > time.Second {
		t.Errorf("BootTime moved by %s between two calls", d)
	}
}

func TestWindowsPendingReboot(t *testing.T) {
	h := host.NewWindows()
	pending, reasons, err := host.PendingReboot(h)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pending reboot: %v %q", pending, reasons)
	needDoubles(t)
	if pending {
		t.Fatalf("a fresh Wine prefix reports a pending reboot: %q", reasons)
	}

	// Make each marker the way Windows does (an empty key, a value) and
	// remove it afterwards, so the test can run again in the same prefix.
	for _, k := range []string{host.CBSRebootPendingKey, host.WURebootRequiredKey} {
		if err := h.SetValue(k, "livedump-test", host.DWORD(1)); err != nil {
			t.Fatal(err)
		}
		if err := h.DeleteValue(k, "livedump-test"); err != nil {
			t.Fatal(err)
		}
		sub := strings.TrimPrefix(k, `HKLM\`)
		t.Cleanup(func() {
			if err := registry.DeleteKey(registry.LOCAL_MACHINE, sub); err != nil {
				t.Errorf("cleanup %s: %v", k, err)
			}
		})
	}
	if err := h.SetValue(host.SessionManagerKey, host.PendingFileRenameValue, host.MultiSZ(`\??\C:\livedump-test.tmp`)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.DeleteValue(host.SessionManagerKey, host.PendingFileRenameValue) })

	pending, reasons, err = host.PendingReboot(h)
	if err != nil || !pending || len(reasons) != 3 {
		t.Fatalf("PendingReboot with all markers = %v, %q, %v; want three reasons", pending, reasons, err)
	}
}

// reg runs reg.exe, the administrator's tool, to set up the registry the
// way an operator or Windows itself would, independently of the code under
// test.
func reg(t *testing.T, args ...string) {
	t.Helper()
	dir, err := windows.GetSystemDirectory()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(filepath.Join(dir, "reg.exe"), args...).CombinedOutput(); err != nil {
		t.Fatalf("reg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestWindowsBootSecurity reads Secure Boot and memory integrity from the
// registry the way Windows writes them, and the running services through the
// powershell double.
func TestWindowsBootSecurity(t *testing.T) {
	needDoubles(t)
	ctx := context.Background()
	h := host.NewWindows()
	sbKey := `HKLM\SYSTEM\CurrentControlSet\Control\SecureBoot\State`
	hvKey := `HKLM\SYSTEM\CurrentControlSet\Control\DeviceGuard\Scenarios\HypervisorEnforcedCodeIntegrity`
	t.Cleanup(func() {
		h.DeleteValue(host.SecureBootStateKey, host.SecureBootValue)
		h.DeleteValue(host.HVCIKey, host.HVCIValue)
	})
	save(t, teststate.WMIFile, teststate.WMI{})

	// A Wine prefix has neither value: like a legacy-BIOS machine, Secure
	// Boot is unknown, and memory integrity is off (the documented default).
	bs, err := host.ReadBootSecurity(ctx, h)
	if err != nil || bs != (host.BootSecurity{SecureBoot: host.StateUnknown, HVCIConfigured: host.StateOff, HVCIRunning: host.StateOff}) {
		t.Fatalf("fresh prefix: %+v, %v", bs, err)
	}

	reg(t, "add", sbKey, "/v", "UEFISecureBootEnabled", "/t", "REG_DWORD", "/d", "1", "/f")
	reg(t, "add", hvKey, "/v", "Enabled", "/t", "REG_DWORD", "/d", "1", "/f")
	save(t, teststate.WMIFile, teststate.WMI{VBSStatus: 2, SecurityServicesRunning: []int{2}})
	bs, err = host.ReadBootSecurity(ctx, h)
	if err != nil || bs != (host.BootSecurity{SecureBoot: host.StateOn, HVCIConfigured: host.StateOn, HVCIRunning: host.StateOn}) {
		t.Fatalf("Secure Boot and memory integrity on: %+v, %v", bs, err)
	}

	reg(t, "add", sbKey, "/v", "UEFISecureBootEnabled", "/t", "REG_DWORD", "/d", "0", "/f")
	reg(t, "add", hvKey, "/v", "Enabled", "/t", "REG_DWORD", "/d", "0", "/f")
	save(t, teststate.WMIFile, teststate.WMI{DeviceGuardMissing: true})
	bs, err = host.ReadBootSecurity(ctx, h)
	if err != nil || bs != (host.BootSecurity{SecureBoot: host.StateOff, HVCIConfigured: host.StateOff, HVCIRunning: host.StateUnknown}) {
		t.Fatalf("both off, Device Guard not reported: %+v, %v", bs, err)
	}
}

// TestWindowsInstalledProducts finds a product Windows Installer registered
// under the Uninstall key (written here with reg.exe), and asks msiexec to
// remove a product code nobody installed.
func TestWindowsInstalledProducts(t *testing.T) {
	needDoubles(t)
	const code = "{D7ACE000-0000-4000-8000-0000000000AA}"
	key := `HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall\` + code
	t.Cleanup(func() { deleteTree(t, strings.TrimPrefix(key, `HKLM\`)) })
	reg(t, "add", key, "/v", "DisplayName", "/t", "REG_SZ", "/d", "DTrace for Windows", "/f")
	reg(t, "add", key, "/v", "DisplayVersion", "/t", "REG_SZ", "/d", "2.0.0", "/f")
	reg(t, "add", key, "/v", "WindowsInstaller", "/t", "REG_DWORD", "/d", "1", "/f")
	h := host.NewWindows()
	got, err := host.FindProducts(h, host.DTraceProductName)
	if err != nil || len(got) != 1 || got[0] != (host.Product{Code: code, Name: "DTrace for Windows", Version: "2.0.0"}) {
		t.Fatalf("FindProducts = %+v, %v", got, err)
	}

	dir, err := os.MkdirTemp("", "msiexec")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	c, err := h.UninstallProduct(context.Background(), "{D7ACE000-0000-4000-8000-0000000000FF}", filepath.Join(dir, "u.log"))
	t.Logf("msiexec /x of an unknown product: %d, %v", c, err)
	if err != nil || c != host.MSIProductNotInstalled {
		t.Errorf("UninstallProduct of an unknown product = %d, %v; want 1605", c, err)
	}
	if _, err := h.UninstallProduct(context.Background(), `C:\x.msi`, filepath.Join(dir, "u.log")); err == nil {
		t.Error("a path passed as product code reached msiexec")
	}
}
