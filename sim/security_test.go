package sim

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/livedump/livedump/agent/host"
)

// A fresh machine is a Windows 11 one: Secure Boot on, memory integrity off
// unless configured, both read the way the agent reads a real machine.
func TestSecureBootAndHVCI(t *testing.T) {
	ctx := context.Background()
	h, _ := fakeHost(t, Config{})
	bs, err := host.ReadBootSecurity(ctx, h)
	if err != nil || bs != (host.BootSecurity{SecureBoot: host.StateOn, HVCIConfigured: host.StateOff, HVCIRunning: host.StateOff}) {
		t.Fatalf("default machine: %+v, %v", bs, err)
	}

	h, _ = fakeHost(t, Config{NoSecureBoot: true, HVCI: true})
	bs, err = host.ReadBootSecurity(ctx, h)
	if err != nil || bs != (host.BootSecurity{SecureBoot: host.StateOff, HVCIConfigured: host.StateOn, HVCIRunning: host.StateOn}) {
		t.Fatalf("HVCI machine: %+v, %v", bs, err)
	}
	if s, _ := h.VBSStatus(ctx); s != host.VBSRunning {
		t.Errorf("memory integrity runs without VBS running (%v)", s)
	}
	if s, _ := h.SecurityServicesRunning(ctx); !reflect.DeepEqual(s, host.SecurityServices{Reported: true, Running: []int{2}}) {
		t.Errorf("SecurityServicesRunning = %+v", s)
	}

	// Turning it off takes a reboot, as on Windows; the state survives a
	// reopen of the machine.
	must(t, h.SetValue(host.HVCIKey, host.HVCIValue, host.DWORD(0)))
	if !h.HVCIRunning() {
		t.Fatal("memory integrity stopped without a reboot")
	}
	reopened, err := New(Config{StateDir: filepath.Dir(h.StatePath()), Clock: h.clock})
	if err != nil || !reopened.HVCIRunning() {
		t.Fatalf("reopened machine lost the running memory integrity: %v", err)
	}
	must(t, h.Boot())
	if h.HVCIRunning() {
		t.Fatal("memory integrity still running after the reboot that turned it off")
	}

	// Hardware that cannot run VBS cannot run memory integrity either.
	h, _ = fakeHost(t, Config{HVCI: true, NoVBS: true})
	if h.HVCIRunning() {
		t.Error("memory integrity runs on a machine that cannot run VBS")
	}
}

// A Windows Server without the BitLocker feature: BitLocker reads off (the
// Windows host's reading of the missing WMI namespace), Suspend-BitLocker
// does not exist.
func TestServerWithoutBitLocker(t *testing.T) {
	ctx := context.Background()
	h, _ := fakeHost(t, Config{InstallationType: "Server", Build: "20348", NoBitLockerFeature: true})
	if s, err := h.BitLockerStatus(ctx, "C:"); err != nil || s != host.BitLockerOff {
		t.Errorf("BitLockerStatus = %v, %v; want off", s, err)
	}
	if err := h.SuspendBitLocker(ctx, "C:", 1); err == nil || !strings.Contains(err.Error(), "not recognized") {
		t.Errorf("SuspendBitLocker = %v, want the cmdlet missing", err)
	}
	reopened, err := New(Config{StateDir: filepath.Dir(h.StatePath()), Clock: h.clock})
	if err != nil {
		t.Fatal(err)
	}
	if err := reopened.SuspendBitLocker(ctx, "C:", 1); err == nil {
		t.Error("the missing feature did not survive a reopen")
	}
	if _, err := New(Config{StateDir: t.TempDir(), BitLocker: true, NoBitLockerFeature: true}); err == nil {
		t.Error("an encrypted volume without the BitLocker feature was accepted")
	}
}

// Installing registers the product under the Uninstall key with its
// ProductCode, as Windows Installer does; msiexec /x {ProductCode} removes
// it with the installation's own record, whatever became of the package.
func TestUninstallByProductCode(t *testing.T) {
	ctx := context.Background()
	h, _ := fakeHost(t, Config{})
	pkgDir, logDir := t.TempDir(), t.TempDir()
	m := dtraceManifest(0)
	m.Product = host.DTraceProductName
	m.ProductCode = "{A1B2C3D4-0000-4000-8000-00000000D7CE}"
	pkg := writeMSI(t, pkgDir, m)
	if code, err := h.InstallMSI(ctx, pkg, filepath.Join(logDir, "i.log")); err != nil || code != 0 {
		t.Fatalf("install = %d, %v", code, err)
	}
	got, err := host.FindProducts(h, "dtrace FOR windows")
	if err != nil || len(got) != 1 || got[0] != (host.Product{Code: m.ProductCode, Name: host.DTraceProductName, Version: m.Version}) {
		t.Fatalf("FindProducts = %+v, %v", got, err)
	}
	if v, err := h.GetValue(host.UninstallKey+`\`+m.ProductCode, "UninstallString"); err != nil || v.Str != "MsiExec.exe /X"+m.ProductCode {
		t.Errorf("UninstallString = %v, %v", v, err)
	}

	if code, err := h.UninstallProduct(ctx, "{00000000-0000-4000-8000-000000000000}", filepath.Join(logDir, "x.log")); err != nil || code != host.MSIProductNotInstalled {
		t.Errorf("uninstall of an unknown product = %d, %v; want 1605", code, err)
	}
	runs := h.MsiexecRuns()
	if _, err := h.UninstallProduct(ctx, `C:\x.msi`, filepath.Join(logDir, "x.log")); err == nil || h.MsiexecRuns() != runs {
		t.Errorf("a path passed as product code: %v (msiexec runs %d -> %d)", err, runs, h.MsiexecRuns())
	}
	if code, err := h.UninstallProduct(ctx, m.ProductCode, filepath.Join(logDir, "u.log")); err != nil || code != 0 {
		t.Fatalf("uninstall = %d, %v", code, err)
	}
	if ok, _ := h.FileExists(dtraceExe); ok {
		t.Error("files left after the uninstall")
	}
	if got, _ := host.FindProducts(h, host.DTraceProductName); len(got) != 0 {
		t.Errorf("Uninstall entry left: %+v", got)
	}
	if l := mustRead(t, filepath.Join(logDir, "u.log")); !strings.Contains(l, "msiexec /x "+m.ProductCode) || !strings.Contains(l, "Removal completed successfully") {
		t.Errorf("log:\n%s", l)
	}

	// A package without a ProductCode gets a stable derived one.
	d := dtraceManifest(0)
	if d.code() != derivedProductCode(strings.ToUpper(d.Product)) || host.ValidateProductCode(d.code()) != nil {
		t.Errorf("derived code %q", d.code())
	}
}
