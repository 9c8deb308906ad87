package sim

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/livedump/livedump/agent/host"
)

const (
	dtraceExe = `C:\Program Files\DTrace\dtrace.exe`
	dtraceSys = `C:\Program Files\DTrace\drivers\dtrace.sys`
)

func dtraceManifest(exitCode int) MSIManifest {
	return MSIManifest{
		Product: "DTrace",
		Version: "2.0.0",
		Files: map[string]string{
			dtraceExe: "simulated dtrace.exe",
			dtraceSys: "simulated driver",
		},
		ExitCode: exitCode,
	}
}

// writeMSI builds a package into dir and returns its path, the way the agent
// would have downloaded it.
func writeMSI(t *testing.T, dir string, m MSIManifest) string {
	t.Helper()
	data, err := BuildMSI(m)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, m.Product+"-"+m.Version+".msi")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBuildMSI(t *testing.T) {
	data, err := BuildMSI(dtraceManifest(0))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, []byte{0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1}) {
		t.Errorf("package does not start with the OLE signature: % x", data[:8])
	}
	if !bytes.Contains(data, []byte(`"product":"DTrace","version":"2.0.0"`)) || !bytes.Contains(data, []byte(`"exit_code":0`)) {
		t.Errorf("manifest not in the documented shape: %s", data[8:])
	}
	m, err := parseMSI(data)
	if err != nil || m.Product != "DTrace" || m.Files[dtraceExe] != "simulated dtrace.exe" {
		t.Errorf("parseMSI = %+v, %v", m, err)
	}

	for _, c := range []struct {
		name string
		edit func(*MSIManifest)
		want string
	}{
		{"no product", func(m *MSIManifest) { m.Product = "" }, "product name"},
		{"bad product", func(m *MSIManifest) { m.Product = `a\b` }, "product name"},
		{"bad version", func(m *MSIManifest) { m.Version = "2.0.0-beta" }, "version"},
		{"bad exit code", func(m *MSIManifest) { m.ExitCode = 5 }, "exit code 5"},
		{"bad path", func(m *MSIManifest) { m.Files[`C:\..\evil`] = "" }, "not allowed"},
		{"other drive", func(m *MSIManifest) { m.Files[`D:\x`] = "" }, "only drive C:"},
		{"root", func(m *MSIManifest) { m.Files[`C:\`] = "" }, "drive root"},
		{"same file", func(m *MSIManifest) { m.Files[strings.ToUpper(dtraceExe)] = "" }, "name the same file"},
		{"file is a dir", func(m *MSIManifest) { m.Files[`C:\Program Files\DTrace`] = "" }, "is a file and the directory"},
	} {
		m := dtraceManifest(0)
		c.edit(&m)
		if _, err := BuildMSI(m); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: BuildMSI err = %v, want %q", c.name, err, c.want)
		}
	}
}

func TestInstallMSIExitCodes(t *testing.T) {
	ctx := context.Background()
	pkgDir := t.TempDir()
	good, err := BuildMSI(dtraceManifest(0))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		pkg       []byte // nil: no file at all
		dirPkg    bool   // the package path is a directory
		want      int
		installed bool
		pending   bool // PendingFileRenameOperations set
		logWants  []string
	}{
		{"missing", nil, false, host.MSIPackageOpenFailed, false, false, []string{"could not be opened", "MainEngineThread is returning 1619"}},
		{"directory", nil, true, host.MSIPackageOpenFailed, false, false, []string{"returning 1619"}},
		{"no magic", []byte(`{"product":"DTrace","version":"2.0.0","files":{},"exit_code":0}`), false, host.MSIPackageInvalid, false, false, []string{"Contact the application vendor", "returning 1620"}},
		{"html download", []byte("<html>404</html>"), false, host.MSIPackageInvalid, false, false, []string{"returning 1620"}},
		{"bad json", append(append([]byte{}, msiMagic...), `{"product":`...), false, host.MSIPackageInvalid, false, false, []string{"returning 1620"}},
		{"unknown field", append(append([]byte{}, msiMagic...), `{"product":"DTrace","version":"2.0.0","files":{},"exit_code":0,"x":1}`...), false, host.MSIPackageInvalid, false, false, []string{"returning 1620"}},
		{"trailing", append(append([]byte{}, good...), `{}`...), false, host.MSIPackageInvalid, false, false, []string{"returning 1620"}},
		{"fatal", must1(t, func() ([]byte, error) { return BuildMSI(dtraceManifest(host.MSIFatal)) }), false, host.MSIFatal, false, false, []string{"Product: DTrace -- Installation operation failed.", "Return value 3.", "returning 1603"}},
		{"another install", must1(t, func() ([]byte, error) { return BuildMSI(dtraceManifest(host.MSIAnotherInstall)) }), false, host.MSIAnotherInstall, false, false, []string{"returning 1618"}},
		{"reboot required", must1(t, func() ([]byte, error) { return BuildMSI(dtraceManifest(host.MSIRebootRequired)) }), false, host.MSIRebootRequired, true, true, []string{"Installation completed successfully", "requires a system restart", "returning 3010"}},
		{"success", good, false, host.MSISuccess, true, false, []string{
			"=== Verbose logging started:", `msiexec /i `, "Product: DTrace -- Installation completed successfully.",
			"Product Name: DTrace. Product Version: 2.0.0.", "Installation success or error status: 0.",
			"Return value 1.", "MainEngineThread is returning 0", "=== Verbose logging stopped:",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, _ := fakeHost(t, Config{})
			pkg := filepath.Join(pkgDir, strings.ReplaceAll(c.name, " ", "_")+".msi")
			switch {
			case c.dirPkg:
				must(t, os.Mkdir(pkg, 0o700))
			case c.pkg != nil:
				must(t, os.WriteFile(pkg, c.pkg, 0o600))
			}
			log := filepath.Join(t.TempDir(), "install.log")
			code, err := h.InstallMSI(ctx, pkg, log)
			if err != nil || code != c.want {
				t.Fatalf("InstallMSI = %d, %v; want %d", code, err, c.want)
			}
			for _, p := range []string{dtraceExe, dtraceSys} {
				if ok, _ := h.FileExists(p); ok != c.installed {
					t.Errorf("FileExists(%s) = %v, want %v", p, ok, c.installed)
				}
			}
			if c.installed {
				hp, _ := h.HostPath(dtraceExe)
				if b, _ := os.ReadFile(hp); string(b) != "simulated dtrace.exe" {
					t.Errorf("dtrace.exe content %q", b)
				}
			} else if ok, _ := h.FileExists(`C:\Program Files\DTrace`); ok {
				t.Error("a failed installation left its directory behind")
			}
			v, err := h.GetValue(sessionManagerKey, pendingRenamesValue)
			if c.pending {
				if err != nil || v.Type != host.MultiString || len(v.Strs) != 4 || v.Strs[1] != `!\??\`+dtraceSys {
					t.Errorf("PendingFileRenameOperations = %v, %v", v, err)
				}
				must(t, h.Boot())
				if _, err := h.GetValue(sessionManagerKey, pendingRenamesValue); !errors.Is(err, host.ErrNotExist) {
					t.Errorf("PendingFileRenameOperations after boot: %v, want ErrNotExist", err)
				}
				if ok, _ := h.FileExists(dtraceExe); !ok {
					t.Error("files gone after the boot")
				}
			} else if !errors.Is(err, host.ErrNotExist) {
				t.Errorf("PendingFileRenameOperations = %v, %v; want none", v, err)
			}
			logText := mustRead(t, log)
			for _, w := range c.logWants {
				if !strings.Contains(logText, w) {
					t.Errorf("log lacks %q:\n%s", w, logText)
				}
			}
		})
	}
}

func TestMSILifecycle(t *testing.T) {
	ctx := context.Background()
	h, _ := fakeHost(t, Config{})
	pkgDir, logDir := t.TempDir(), t.TempDir()
	pkg := writeMSI(t, pkgDir, dtraceManifest(0))
	log := filepath.Join(logDir, "dtrace.log")

	// A file someone else put in Program Files survives the uninstall, and
	// so does the directory it lives in.
	other, _ := h.HostPath(`C:\Program Files\other.txt`)
	must(t, os.WriteFile(other, []byte("x"), 0o644))

	code, err := h.UninstallMSI(ctx, pkg, log)
	if err != nil || code != host.MSIProductNotInstalled {
		t.Errorf("uninstall before install = %d, %v; want 1605", code, err)
	}
	if l := mustRead(t, log); !strings.Contains(l, "only valid for products that are currently installed") || !strings.Contains(l, "msiexec /x") {
		t.Errorf("1605 log:\n%s", l)
	}

	if code, err := h.InstallMSI(ctx, pkg, log); err != nil || code != 0 {
		t.Fatalf("install = %d, %v", code, err)
	}
	state := mustRead(t, h.StatePath())
	// Installing again changes nothing, like msiexec with the same product.
	exe, _ := h.HostPath(dtraceExe)
	must(t, os.WriteFile(exe, []byte("patched by hand"), 0o644))
	if code, err := h.InstallMSI(ctx, pkg, log); err != nil || code != 0 {
		t.Errorf("second install = %d, %v; want 0", code, err)
	}
	if b, _ := os.ReadFile(exe); string(b) != "patched by hand" {
		t.Error("second install rewrote the files")
	}
	if mustRead(t, h.StatePath()) != state {
		t.Error("second install changed the machine state")
	}
	// Another version of the same product is refused.
	v2 := dtraceManifest(0)
	v2.Version = "2.1.0"
	pkg2 := writeMSI(t, pkgDir, v2)
	if code, err := h.InstallMSI(ctx, pkg2, log); err != nil || code != 1638 {
		t.Errorf("install of another version = %d, %v; want 1638", code, err)
	}

	if code, err := h.UninstallMSI(ctx, pkg, log); err != nil || code != 0 {
		t.Fatalf("uninstall = %d, %v", code, err)
	}
	if l := mustRead(t, log); !strings.Contains(l, "Removal completed successfully") || !strings.Contains(l, "returning 0") {
		t.Errorf("uninstall log:\n%s", l)
	}
	for _, p := range []struct {
		path string
		want bool
	}{
		{dtraceExe, false},
		{dtraceSys, false},
		{`C:\Program Files\DTrace\drivers`, false},
		{`C:\Program Files\DTrace`, false},
		{`C:\Program Files`, true},
		{`C:\Program Files\other.txt`, true},
	} {
		if ok, err := h.FileExists(p.path); err != nil || ok != p.want {
			t.Errorf("after uninstall FileExists(%s) = %v, %v; want %v", p.path, ok, err, p.want)
		}
	}
	if code, err := h.UninstallMSI(ctx, pkg, log); err != nil || code != host.MSIProductNotInstalled {
		t.Errorf("second uninstall = %d, %v; want 1605", code, err)
	}
	// And the new version installs now.
	if code, err := h.InstallMSI(ctx, pkg2, log); err != nil || code != 0 {
		t.Errorf("install after uninstall = %d, %v; want 0", code, err)
	}
}

func TestMSILogFailure(t *testing.T) {
	ctx := context.Background()
	h, _ := fakeHost(t, Config{})
	pkg := writeMSI(t, t.TempDir(), dtraceManifest(0))
	missing := filepath.Join(t.TempDir(), "no-such-dir", "install.log")
	if code, err := h.InstallMSI(ctx, pkg, missing); err != nil || code != 1622 {
		t.Errorf("InstallMSI with a log in a missing directory = %d, %v; want 1622", code, err)
	}
	if ok, _ := h.FileExists(dtraceExe); ok {
		t.Error("installed although the log could not be opened")
	}
	if code, err := h.UninstallMSI(ctx, pkg, missing); err != nil || code != 1622 {
		t.Errorf("UninstallMSI with a log in a missing directory = %d, %v; want 1622", code, err)
	}
}

// TestMSIWriteFailureRollsBack: an installation that cannot write one of its
// files leaves nothing behind and reports 1603, as Windows Installer's
// rollback does.
func TestMSIWriteFailureRollsBack(t *testing.T) {
	ctx := context.Background()
	h, _ := fakeHost(t, Config{})
	// A file where the package needs a directory.
	blocker, _ := h.HostPath(`C:\Program Files\DTrace`)
	must(t, os.WriteFile(blocker, []byte("in the way"), 0o644))
	m := dtraceManifest(0)
	m.Files = map[string]string{`C:\Program Files\A\a.txt`: "a", `C:\Program Files\DTrace\dtrace.exe`: "x"}
	pkg := writeMSI(t, t.TempDir(), m)
	log := filepath.Join(t.TempDir(), "i.log")
	if code, err := h.InstallMSI(ctx, pkg, log); err != nil || code != host.MSIFatal {
		t.Fatalf("InstallMSI = %d, %v; want 1603", code, err)
	}
	if ok, _ := h.FileExists(`C:\Program Files\A`); ok {
		t.Error("rolled-back installation left a directory")
	}
	if b, _ := os.ReadFile(blocker); string(b) != "in the way" {
		t.Error("the blocking file was changed")
	}
	if l := mustRead(t, log); !strings.Contains(l, "Rolling back") || !strings.Contains(l, "returning 1603") {
		t.Errorf("log:\n%s", l)
	}
	// Nothing was recorded either.
	if code, _ := h.UninstallMSI(ctx, pkg, log); code != host.MSIProductNotInstalled {
		t.Errorf("UninstallMSI = %d, want 1605", code)
	}
}
