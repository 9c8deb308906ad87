package sim

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/livedump/livedump/agent/host"
)

// t0 is the fake clock's start: the machine's first boot in these tests.
var t0 = time.Date(2024, 11, 26, 13, 0, 0, 0, time.UTC)

func fakeHost(t *testing.T, cfg Config) (*Host, *clockwork.FakeClock) {
	t.Helper()
	fc := clockwork.NewFakeClockAt(t0)
	cfg.Clock = fc
	return newHost(t, cfg), fc
}

func TestKeyExists(t *testing.T) {
	h, _ := fakeHost(t, Config{})
	if err := h.SetValue(`HKLM\SOFTWARE\LiveDump\Deep\Key`, "v", host.DWORD(1)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		key     string
		want    bool
		wantErr string
	}{
		{`HKLM\SOFTWARE\LiveDump\Deep\Key`, true, ""},
		{`hklm\software\livedump\deep\key`, true, ""},
		{`HKEY_LOCAL_MACHINE\SOFTWARE\LIVEDUMP`, true, ""}, // a parent created on write
		{`HKLM\SOFTWARE\LiveDump\Deep\Key\Sub`, false, ""},
		{`HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing`, true, ""},
		{`HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending`, false, ""},
		{`HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update`, true, ""},
		{`HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired`, false, ""},
		{`HKLM\SYSTEM\CurrentControlSet\Control\CrashControl\LiveKernelReports`, true, ""},
		{`HKLM\SYSTEM\CurrentControlSet\Control\CrashControl\FullLiveKernelReports`, false, ""},
		{`HKCU\Software`, false, "only HKLM"},
		{`HKLM`, false, "needs a subkey"},
		{`HKLM\SOFTWARE\..\x`, false, "not allowed"},
		{`HKLM\SOFTWARE\\x`, false, "empty path component"},
	} {
		got, err := h.KeyExists(c.key)
		switch {
		case c.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("KeyExists(%q) err = %v, want %q", c.key, err, c.wantErr)
			}
		case err != nil || got != c.want:
			t.Errorf("KeyExists(%q) = %v, %v; want %v", c.key, got, err, c.want)
		}
	}
	// Deleting the last value keeps the key, as on Windows.
	if err := h.DeleteValue(`HKLM\SOFTWARE\LiveDump\Deep\Key`, "v"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := h.KeyExists(`HKLM\SOFTWARE\LiveDump\Deep\Key`); !ok {
		t.Error("key vanished with its last value")
	}
}

func TestSeedForProvisioning(t *testing.T) {
	h, _ := fakeHost(t, Config{})
	for _, w := range []struct {
		key, name string
		v         host.Value
	}{
		{host.CurrentVersionKey, "SystemRoot", host.SZ(`C:\WINDOWS`)},
		{`HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion`, "ProgramFilesDir", host.SZ(`C:\Program Files`)},
	} {
		if got, err := h.GetValue(w.key, w.name); err != nil || !got.Equal(w.v) {
			t.Errorf("%s\\%s = %v, %v; want %v", w.key, w.name, got, err, w.v)
		}
	}
	for _, a := range [][2]string{
		{liveKernelReportsKey, "LiveKernelReportsPath"},
		{sessionManagerKey, pendingRenamesValue},
	} {
		if _, err := h.GetValue(a[0], a[1]); !errors.Is(err, host.ErrNotExist) {
			t.Errorf("%s\\%s: err = %v, want ErrNotExist", a[0], a[1], err)
		}
	}
	for _, p := range []struct {
		path string
		want bool
	}{
		{`C:\WINDOWS`, true},
		{`C:\WINDOWS\System32`, true},
		{`C:\Program Files`, true},
		{`C:\WINDOWS\LiveKernelReports`, false}, // Windows creates it with the first dump
		{`C:\Program Files\DTrace\dtrace.exe`, false},
	} {
		if got, err := h.FileExists(p.path); err != nil || got != p.want {
			t.Errorf("FileExists(%q) = %v, %v; want %v", p.path, got, err, p.want)
		}
	}
}

func TestFirstBoot(t *testing.T) {
	ctx := context.Background()
	h, _ := fakeHost(t, Config{})
	if bt, err := h.BootTime(ctx); err != nil || !bt.Equal(t0) {
		t.Errorf("BootTime = %v, %v; want %v", bt, err, t0)
	}
	if v, err := h.BCDDtrace(ctx); err != nil || v != (host.BCDValue{}) {
		t.Errorf("BCDDtrace = %v, %v; want not set", v, err)
	}
	if h.DtraceDriverLoaded() || h.RecoveryRequired() {
		t.Error("a fresh machine has the dtrace driver loaded or needs recovery")
	}
	if s, err := h.VBSStatus(ctx); err != nil || s != host.VBSOff {
		t.Errorf("VBSStatus = %v, %v; want off", s, err)
	}
	if s, err := h.BitLockerStatus(ctx, "C:"); err != nil || s != host.BitLockerOff {
		t.Errorf("BitLockerStatus = %v, %v; want off", s, err)
	}
	hb, _ := fakeHost(t, Config{BitLocker: true})
	if s, err := hb.BitLockerStatus(ctx, "C:"); err != nil || s != host.BitLockerOn {
		t.Errorf("BitLocker machine: BitLockerStatus = %v, %v; want on", s, err)
	}
}

func TestBCDStoredVersusBoot(t *testing.T) {
	ctx := context.Background()
	h, fc := fakeHost(t, Config{})
	notSet, on, off := host.BCDValue{}, host.BCDValue{Present: true, On: true}, host.BCDValue{Present: true}
	steps := []struct {
		name       string
		do         func() error
		boot       bool
		wantStored host.BCDValue
		wantLoaded bool
		wantErr    string
	}{
		{"delete unset", func() error { return h.DeleteBCDDtrace(ctx) }, false, notSet, false, "Element not found"},
		{"set on", func() error { return h.SetBCDDtrace(ctx, true) }, false, on, false, ""},
		{"boot", nil, true, on, true, ""},
		{"set off", func() error { return h.SetBCDDtrace(ctx, false) }, false, off, true, ""},
		{"boot off", nil, true, off, false, ""},
		{"set on again", func() error { return h.SetBCDDtrace(ctx, true) }, false, on, false, ""},
		{"boot on", nil, true, on, true, ""},
		{"delete", func() error { return h.DeleteBCDDtrace(ctx) }, false, notSet, true, ""},
		{"boot unset", nil, true, notSet, false, ""},
	}
	for _, s := range steps {
		var err error
		if s.boot {
			fc.Advance(time.Minute)
			err = h.Boot()
			if bt, _ := h.BootTime(ctx); !bt.Equal(fc.Now()) {
				t.Errorf("%s: BootTime = %v, want %v", s.name, bt, fc.Now())
			}
		} else {
			err = s.do()
		}
		if s.wantErr == "" && err != nil || s.wantErr != "" && (err == nil || !strings.Contains(err.Error(), s.wantErr)) {
			t.Errorf("%s: err = %v, want %q", s.name, err, s.wantErr)
		}
		if got, _ := h.BCDDtrace(ctx); got != s.wantStored {
			t.Errorf("%s: stored = %v, want %v", s.name, got, s.wantStored)
		}
		if got := h.DtraceDriverLoaded(); got != s.wantLoaded {
			t.Errorf("%s: DtraceDriverLoaded = %v, want %v", s.name, got, s.wantLoaded)
		}
	}
}

func TestVBS(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		noVBS bool
		value *host.Value // EnableVirtualizationBasedSecurity; nil: absent
		want  host.VBSStatus
	}{
		{"absent", false, nil, host.VBSOff},
		{"on", false, &[]host.Value{host.DWORD(1)}[0], host.VBSRunning},
		{"zero", false, &[]host.Value{host.DWORD(0)}[0], host.VBSOff},
		{"two", false, &[]host.Value{host.DWORD(2)}[0], host.VBSOff},
		{"string one", false, &[]host.Value{host.SZ("1")}[0], host.VBSOff},
		{"on, not capable", true, &[]host.Value{host.DWORD(1)}[0], host.VBSEnabled},
		{"absent, not capable", true, nil, host.VBSOff},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, _ := fakeHost(t, Config{NoVBS: c.noVBS})
			if c.value != nil {
				if err := h.SetValue(deviceGuardKey, "EnableVirtualizationBasedSecurity", *c.value); err != nil {
					t.Fatal(err)
				}
			}
			// Nothing changes until the machine boots.
			if s, err := h.VBSStatus(ctx); err != nil || s != host.VBSOff {
				t.Errorf("before boot VBSStatus = %v, %v; want off", s, err)
			}
			if err := h.Boot(); err != nil {
				t.Fatal(err)
			}
			if s, err := h.VBSStatus(ctx); err != nil || s != c.want {
				t.Errorf("after boot VBSStatus = %v, %v; want %v", s, err, c.want)
			}
			// Turning it off also needs a boot.
			_ = h.DeleteValue(deviceGuardKey, "EnableVirtualizationBasedSecurity")
			if s, _ := h.VBSStatus(ctx); s != c.want {
				t.Errorf("after removing the value VBSStatus = %v before a boot, want %v", s, c.want)
			}
			if err := h.Boot(); err != nil {
				t.Fatal(err)
			}
			if s, _ := h.VBSStatus(ctx); s != host.VBSOff {
				t.Errorf("after the second boot VBSStatus = %v, want off", s)
			}
		})
	}
}

func TestBitLockerErrors(t *testing.T) {
	ctx := context.Background()
	h, _ := fakeHost(t, Config{BitLocker: true})
	plain, _ := fakeHost(t, Config{})
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"unknown volume", func() error { _, err := h.BitLockerStatus(ctx, "D:"); return err }(), `"D:": no such volume`},
		{"lower case", func() error { _, err := h.BitLockerStatus(ctx, "c:"); return err }(), `"c:": want a drive letter`},
		{"mount point", func() error { _, err := h.BitLockerStatus(ctx, `C:\`); return err }(), "want a drive letter"},
		{"suspend unknown", h.SuspendBitLocker(ctx, "E:", 1), `"E:": no such volume`},
		{"suspend zero", h.SuspendBitLocker(ctx, "C:", 0), "outside 1..15"},
		{"suspend 16", h.SuspendBitLocker(ctx, "C:", 16), "outside 1..15"},
		{"suspend unencrypted", plain.SuspendBitLocker(ctx, "C:", 1), "not enabled"},
	} {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, c.err, c.want)
		}
	}
	if s, _ := h.BitLockerStatus(ctx, "C:"); s != host.BitLockerOn {
		t.Errorf("failed suspends changed the status to %v", s)
	}
}

func TestBitLockerSuspend(t *testing.T) {
	ctx := context.Background()
	for _, n := range []int{1, 2, 15} {
		h, _ := fakeHost(t, Config{BitLocker: true})
		if err := h.SuspendBitLocker(ctx, "C:", n); err != nil {
			t.Fatal(err)
		}
		for boot := 0; boot <= n; boot++ {
			want := host.BitLockerOff
			if boot == n {
				want = host.BitLockerOn
			}
			if s, err := h.BitLockerStatus(ctx, "C:"); err != nil || s != want {
				t.Fatalf("suspend %d, after %d boots: status %v, %v; want %v", n, boot, s, err, want)
			}
			if boot < n {
				if err := h.Boot(); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

func TestBitLockerRecovery(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name         string
		bitlocker    bool
		prepare      func(h *Host) error
		wantRecovery bool
	}{
		{"change under protection", true, func(h *Host) error { return h.SetBCDDtrace(ctx, true) }, true},
		{"change, suspended", true, func(h *Host) error {
			if err := h.SuspendBitLocker(ctx, "C:", 1); err != nil {
				return err
			}
			return h.SetBCDDtrace(ctx, true)
		}, false},
		{"change, no BitLocker", false, func(h *Host) error { return h.SetBCDDtrace(ctx, true) }, false},
		{"changed and changed back", true, func(h *Host) error {
			if err := h.SetBCDDtrace(ctx, true); err != nil {
				return err
			}
			return h.DeleteBCDDtrace(ctx)
		}, false},
		{"registry only", true, func(h *Host) error {
			return h.SetValue(deviceGuardKey, "EnableVirtualizationBasedSecurity", host.DWORD(1))
		}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			h, fc := fakeHost(t, Config{StateDir: dir, BitLocker: c.bitlocker})
			if err := c.prepare(h); err != nil {
				t.Fatal(err)
			}
			fc.Advance(time.Minute)
			err := h.Boot()
			if !c.wantRecovery {
				if err != nil || h.RecoveryRequired() {
					t.Fatalf("Boot = %v, RecoveryRequired %v; want a clean boot", err, h.RecoveryRequired())
				}
				// Protection is back on (if it was suspended) and
				// measures the new configuration: the next boot is fine.
				if err := h.Boot(); err != nil {
					t.Errorf("second boot: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrRecoveryRequired) || !h.RecoveryRequired() {
				t.Fatalf("Boot = %v, RecoveryRequired %v; want the recovery screen", err, h.RecoveryRequired())
			}
			// The machine did not come up: nothing of the boot happened.
			if bt, _ := h.BootTime(ctx); !bt.Equal(t0) {
				t.Errorf("BootTime = %v, want the previous boot %v", bt, t0)
			}
			if h.DtraceDriverLoaded() {
				t.Error("dtrace driver loaded on a machine that did not boot")
			}
			if err := h.Boot(); !errors.Is(err, ErrRecoveryRequired) {
				t.Errorf("second boot err = %v, want ErrRecoveryRequired", err)
			}
			if _, err := New(Config{StateDir: dir}); !errors.Is(err, ErrRecoveryRequired) {
				t.Errorf("New on a machine in recovery: err = %v, want ErrRecoveryRequired", err)
			}
		})
	}
}

func TestHostPath(t *testing.T) {
	h, _ := fakeHost(t, Config{})
	drive := filepath.Join(h.dir, DriveDir)
	for _, c := range []struct {
		in, want string
	}{
		{`C:\`, drive},
		{`C:\Program Files\DTrace\dtrace.exe`, filepath.Join(drive, "Program Files", "DTrace", "dtrace.exe")},
		{`c:\WINDOWS\LiveKernelReports\DTRACE-20241126-1300.dmp`, filepath.Join(drive, "WINDOWS", "LiveKernelReports", "DTRACE-20241126-1300.dmp")},
		{`C:\Program Files (x86)\a_b-c.d`, filepath.Join(drive, "Program Files (x86)", "a_b-c.d")},
	} {
		if got, err := h.HostPath(c.in); err != nil || got != c.want {
			t.Errorf("HostPath(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, c := range []struct {
		in, want string
	}{
		{`C:\..\x`, "not allowed"},
		{`C:\a\..\..\x`, "not allowed"},
		{`C:\a..b`, "not allowed"},
		{`C:\.\x`, "not allowed"},
		{`D:\x`, "only drive C:"},
		{`C:/x`, "backslashes"},
		{`C:\a/b`, "backslashes"},
		{`C:`, "not an absolute path"},
		{`C:x`, "not an absolute path"},
		{`\x`, "not an absolute path"},
		{`\??\C:\livedumps`, "not an absolute path"},
		{`x`, "not an absolute path"},
		{``, "not an absolute path"},
		{`C:\a\\b`, "empty path component"},
		{`C:\a\`, "empty path component"},
		{`C:\a*b`, "not allowed"},
		{`C:\a:b`, "not allowed"},
		{`C:\a$`, "not allowed"},
		{"C:\\caf\u00e9", "not allowed"},
		{"C:\\a\x00b", "not allowed"},
		{`C:\a.`, "ends with a space or dot"},
		{`C:\a `, "ends with a space or dot"},
		{`C:\ a`, "begins with a space"},
		{`C:\NUL`, "reserved device name"},
		{`C:\dir\con.txt`, "reserved device name"},
		{`C:\COM1`, "reserved device name"},
		{`C:\` + strings.Repeat("a", 256), "longer than"},
		{`C:\` + strings.Repeat(`abcdefghi\`, 26) + "x", "longer than 260"},
	} {
		got, err := h.HostPath(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("HostPath(%q) = %q, %v; want an error with %q", c.in, got, err, c.want)
		}
		if _, err := h.FileExists(c.in); err == nil {
			t.Errorf("FileExists(%q) accepted an invalid path", c.in)
		}
	}
}

func TestFileExists(t *testing.T) {
	h, _ := fakeHost(t, Config{})
	p, err := h.HostPath(`C:\Temp\x.txt`)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		want bool
	}{
		{`C:\`, true},
		{`C:\Temp`, true},
		{`C:\Temp\x.txt`, true},
		{`C:\Temp\X.TXT`, false}, // matched as given
		{`C:\Temp\y.txt`, false},
		{`C:\Temp\x.txt\y`, false},
		{`C:\Nope\x`, false},
	} {
		if got, err := h.FileExists(c.path); err != nil || got != c.want {
			t.Errorf("FileExists(%q) = %v, %v; want %v", c.path, got, err, c.want)
		}
	}
}

func TestMachinePersists(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fc := clockwork.NewFakeClockAt(t0)
	h := newHost(t, Config{StateDir: dir, Clock: fc, BitLocker: true, NoVBS: true})
	must(t, h.SuspendBitLocker(ctx, "C:", 2))
	must(t, h.SetBCDDtrace(ctx, true))
	must(t, h.SetValue(deviceGuardKey, "EnableVirtualizationBasedSecurity", host.DWORD(1)))
	fc.Advance(time.Hour)
	must(t, h.Boot())
	must(t, h.SetBCDDtrace(ctx, false))
	pkg := writeMSI(t, t.TempDir(), dtraceManifest(0))
	if code, err := h.InstallMSI(ctx, pkg, filepath.Join(t.TempDir(), "i.log")); err != nil || code != 0 {
		t.Fatalf("InstallMSI = %d, %v", code, err)
	}
	must(t, h.Reboot(ctx, 5*time.Minute, "later"))

	// Config of an existing machine does not matter, except the clock.
	r := newHost(t, Config{StateDir: dir, Clock: fc})
	if bt, _ := r.BootTime(ctx); !bt.Equal(t0.Add(time.Hour)) {
		t.Errorf("BootTime = %v", bt)
	}
	if v, _ := r.BCDDtrace(ctx); v != (host.BCDValue{Present: true}) {
		t.Errorf("stored BCD = %v, want off", v)
	}
	if !r.DtraceDriverLoaded() {
		t.Error("boot-time BCD lost")
	}
	if s, _ := r.VBSStatus(ctx); s != host.VBSEnabled {
		t.Errorf("VBSStatus = %v, want enabled, not running (capability lost?)", s)
	}
	if s, _ := r.BitLockerStatus(ctx, "C:"); s != host.BitLockerOff {
		t.Errorf("BitLocker = %v, want suspended", s)
	}
	if ok, _ := r.FileExists(`C:\Program Files\DTrace\dtrace.exe`); !ok {
		t.Error("installed file missing")
	}
	if err := r.Reboot(ctx, 0, ""); err == nil || !strings.Contains(err.Error(), "already been scheduled") {
		t.Errorf("scheduled reboot lost: second Reboot err = %v", err)
	}
	must(t, r.Boot())
	if s, _ := r.BitLockerStatus(ctx, "C:"); s != host.BitLockerOn {
		t.Errorf("after the second boot BitLocker = %v, want on", s)
	}
	if code, err := r.UninstallMSI(ctx, pkg, filepath.Join(t.TempDir(), "u.log")); err != nil || code != 0 {
		t.Errorf("product record lost: UninstallMSI = %d, %v", code, err)
	}
	if a, b := mustRead(t, r.StatePath()), string(must1(t, r.encode)); a != b {
		t.Errorf("state file differs from memory:\n%s\n---\n%s", a, b)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func must1[T any](t *testing.T, f func() (T, error)) T {
	t.Helper()
	v, err := f()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestRebootValidation(t *testing.T) {
	ctx := context.Background()
	h, _ := fakeHost(t, Config{})
	for _, c := range []struct {
		delay time.Duration
		msg   string
		want  string
	}{
		{-time.Second, "", "outside 0..10m0s"},
		{10*time.Minute + 1, "", "outside 0..10m0s"},
		{0, strings.Repeat("é", 513), "513 characters"},
		{0, "a\x00b", "not valid text"},
		{0, "\xff", "not valid text"},
	} {
		if err := h.Reboot(ctx, c.delay, c.msg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Reboot(%v, %q) err = %v, want %q", c.delay, c.msg, err, c.want)
		}
	}
	must(t, h.Reboot(ctx, 10*time.Minute, strings.Repeat("é", 512)))
	if err := h.Reboot(ctx, 0, ""); err == nil || !strings.Contains(err.Error(), "(1190)") {
		t.Errorf("second Reboot err = %v, want ERROR_SHUTDOWN_IS_SCHEDULED", err)
	}
	must(t, h.Boot())
	must(t, h.Reboot(ctx, 0, "")) // the boot cleared the request
}

func TestCancelledContext(t *testing.T) {
	h, _ := fakeHost(t, Config{BitLocker: true})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := t.TempDir()
	pkg := writeMSI(t, dir, dtraceManifest(0))
	log := filepath.Join(dir, "x.log")
	calls := map[string]error{
		"BCDDtrace":        func() error { _, err := h.BCDDtrace(ctx); return err }(),
		"SetBCDDtrace":     h.SetBCDDtrace(ctx, true),
		"DeleteBCDDtrace":  h.DeleteBCDDtrace(ctx),
		"VBSStatus":        func() error { _, err := h.VBSStatus(ctx); return err }(),
		"BitLockerStatus":  func() error { _, err := h.BitLockerStatus(ctx, "C:"); return err }(),
		"SuspendBitLocker": h.SuspendBitLocker(ctx, "C:", 1),
		"InstallMSI":       func() error { _, err := h.InstallMSI(ctx, pkg, log); return err }(),
		"UninstallMSI":     func() error { _, err := h.UninstallMSI(ctx, pkg, log); return err }(),
		"BootTime":         func() error { _, err := h.BootTime(ctx); return err }(),
		"Reboot":           h.Reboot(ctx, 0, ""),
	}
	for name, err := range calls {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s err = %v, want context.Canceled", name, err)
		}
	}
	if v, _ := h.BCDDtrace(context.Background()); v.Present {
		t.Error("a cancelled SetBCDDtrace changed the BCD")
	}
	if ok, _ := h.FileExists(`C:\Program Files\DTrace\dtrace.exe`); ok {
		t.Error("a cancelled InstallMSI installed files")
	}
	if _, err := os.Stat(log); err == nil {
		t.Error("a cancelled InstallMSI wrote a log")
	}
}

func TestFailedSaveRollsBackMachine(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	h, fc := fakeHost(t, Config{StateDir: dir, BitLocker: true})
	pkg := writeMSI(t, t.TempDir(), dtraceManifest(host.MSIRebootRequired))
	logDir := t.TempDir()
	must(t, h.SuspendBitLocker(ctx, "C:", 1))
	if code, err := h.InstallMSI(ctx, pkg, filepath.Join(logDir, "ok.log")); err != nil || code != host.MSIRebootRequired {
		t.Fatalf("InstallMSI = %d, %v", code, err)
	}
	before := mustRead(t, h.StatePath())
	good := h.path
	h.path = filepath.Join(dir, "gone", StateFile)

	fc.Advance(time.Minute)
	for name, err := range map[string]error{
		"SetBCDDtrace":     h.SetBCDDtrace(ctx, true),
		"SuspendBitLocker": h.SuspendBitLocker(ctx, "C:", 3),
		"Reboot":           h.Reboot(ctx, time.Second, ""),
		"Boot":             h.Boot(),
		"UninstallMSI": func() error {
			code, err := h.UninstallMSI(ctx, pkg, filepath.Join(logDir, "u.log"))
			if err != nil && code != -1 {
				t.Errorf("UninstallMSI code %d with an error, want -1", code)
			}
			return err
		}(),
	} {
		if err == nil {
			t.Errorf("%s succeeded although the state could not be saved", name)
		}
	}
	if ok, _ := h.FileExists(`C:\Program Files\DTrace\dtrace.exe`); !ok {
		t.Error("failed UninstallMSI left the files removed")
	}
	if ok, _ := h.FileExists(`C:\Program Files\DTrace`); !ok {
		t.Error("failed UninstallMSI left the directory removed")
	}
	h.path = good
	h.mu.Lock()
	after, err := h.encode()
	h.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != before {
		t.Errorf("failed changes left the machine changed in memory:\n%s\n---\n%s", after, before)
	}

	// A failed installation takes its files back too.
	h2, _ := fakeHost(t, Config{})
	h2.path = filepath.Join(h2.dir, "gone", StateFile)
	if code, err := h2.InstallMSI(ctx, pkg, filepath.Join(logDir, "i2.log")); err == nil {
		t.Errorf("InstallMSI = %d, nil although the state could not be saved", code)
	}
	if ok, _ := h2.FileExists(`C:\Program Files\DTrace`); ok {
		t.Error("failed InstallMSI left files behind")
	}
	if _, err := h2.GetValue(sessionManagerKey, pendingRenamesValue); !errors.Is(err, host.ErrNotExist) {
		t.Errorf("failed InstallMSI left PendingFileRenameOperations: %v", err)
	}
}

func TestConcurrentMachineUse(t *testing.T) {
	ctx := context.Background()
	h, _ := fakeHost(t, Config{BitLocker: true})
	pkg := writeMSI(t, t.TempDir(), dtraceManifest(0))
	logDir := t.TempDir()
	var wg sync.WaitGroup
	for g := 0; g < 6; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				_ = h.SetBCDDtrace(ctx, i%2 == 0)
				_, _ = h.BCDDtrace(ctx)
				_, _ = h.VBSStatus(ctx)
				_, _ = h.BitLockerStatus(ctx, "C:")
				_ = h.SuspendBitLocker(ctx, "C:", 2)
				_, _ = h.BootTime(ctx)
				_ = h.DtraceDriverLoaded()
				_, _ = h.KeyExists(cbsKey)
				_, _ = h.FileExists(`C:\Program Files\DTrace\dtrace.exe`)
				if code, err := h.InstallMSI(ctx, pkg, filepath.Join(logDir, "i.log")); err != nil || code != 0 {
					t.Errorf("InstallMSI = %d, %v", code, err)
				}
				if g == 0 {
					_ = h.Boot()
				}
			}
		}()
	}
	wg.Wait()
	if h.RecoveryRequired() {
		t.Error("a suspended machine went into recovery")
	}
}

// TestRunServiceReboot walks the path provisioning takes: the service asks
// for a reboot, the SCM stops it when the delay has passed, the machine boots
// with the new configuration and the service starts again.
func TestRunServiceReboot(t *testing.T) {
	bg := context.Background()
	h, fc := fakeHost(t, Config{BitLocker: true})
	must(t, h.SetBCDDtrace(bg, true))
	must(t, h.SuspendBitLocker(bg, "C:", 1))

	firstStopped := make(chan struct{})
	secondStarted := make(chan struct{})
	var calls atomic.Int32
	run := func(ctx context.Context) error {
		switch calls.Add(1) {
		case 1:
			if err := h.Reboot(ctx, 5*time.Second, "livedump: enabling DTrace"); err != nil {
				return err
			}
			<-ctx.Done()
			close(firstStopped)
			return ctx.Err()
		case 2:
			close(secondStarted)
			<-ctx.Done()
			return ctx.Err()
		}
		t.Error("run called a third time")
		return nil
	}
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- RunService(ctx, h, run) }()

	tctx, tcancel := context.WithTimeout(bg, 10*time.Second)
	defer tcancel()
	if err := fc.BlockUntilContext(tctx, 1); err != nil {
		t.Fatalf("RunService never armed a timer for the reboot: %v", err)
	}
	if err := RunService(bg, h, run); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second RunService err = %v", err)
	}
	fc.Advance(4 * time.Second)
	select {
	case <-firstStopped:
		t.Fatal("service stopped before the reboot delay elapsed")
	case <-time.After(50 * time.Millisecond):
	}
	if h.DtraceDriverLoaded() {
		t.Fatal("BCD took effect before the reboot")
	}
	fc.Advance(time.Second)
	for _, c := range []struct {
		name string
		ch   chan struct{}
	}{{"first run stopped", firstStopped}, {"second run started", secondStarted}} {
		select {
		case <-c.ch:
		case <-tctx.Done():
			t.Fatalf("timed out waiting for: %s", c.name)
		}
	}
	if bt, _ := h.BootTime(bg); !bt.Equal(t0.Add(5 * time.Second)) {
		t.Errorf("BootTime = %v, want %v", bt, t0.Add(5*time.Second))
	}
	if !h.DtraceDriverLoaded() {
		t.Error("BCD change not in effect after the reboot")
	}
	if s, _ := h.BitLockerStatus(bg, "C:"); s != host.BitLockerOn {
		t.Errorf("BitLocker = %v after the reboot, want on again", s)
	}
	if h.RecoveryRequired() {
		t.Error("machine went to recovery")
	}
	if _, ok := h.pendingReboot(); ok {
		t.Error("reboot request still pending after the boot")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("RunService = %v, want context.Canceled", err)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("run called %d times, want 2", n)
	}
	// RunService can run again once it has returned.
	ctx2, cancel2 := context.WithCancel(bg)
	cancel2()
	if err := RunService(ctx2, h, func(context.Context) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("RunService after the first returned: %v", err)
	}
}

func TestRunServiceReturns(t *testing.T) {
	bg := context.Background()
	boom := errors.New("boom")
	for _, c := range []struct {
		name   string
		run    func(context.Context) error
		cancel bool // cancel RunService's context once run has started
		want   error
	}{
		{"run fails", func(context.Context) error { return boom }, false, boom},
		{"run stops", func(context.Context) error { return nil }, false, nil},
		{"ctx ends", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }, true, context.Canceled},
		{"ctx ends, run returns nil", func(ctx context.Context) error { <-ctx.Done(); return nil }, true, context.Canceled},
		{"ctx ends, run fails", func(ctx context.Context) error { <-ctx.Done(); return boom }, true, boom},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, _ := fakeHost(t, Config{})
			ctx, cancel := context.WithCancel(bg)
			defer cancel()
			started := make(chan struct{})
			var once sync.Once
			run := func(ctx context.Context) error {
				once.Do(func() { close(started) })
				return c.run(ctx)
			}
			done := make(chan error, 1)
			go func() { done <- RunService(ctx, h, run) }()
			<-started
			if c.cancel {
				cancel()
			}
			select {
			case err := <-done:
				if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
					t.Errorf("RunService = %v, want %v", err, c.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("RunService did not return")
			}
		})
	}
}

// TestRunServiceBootFails proves that the model stops the loop when the
// reboot it performs meets BitLocker: provisioning that forgot to suspend it
// gets an error, not a silently rebooted machine.
func TestRunServiceBootFails(t *testing.T) {
	bg := context.Background()
	h, _ := fakeHost(t, Config{BitLocker: true})
	must(t, h.SetBCDDtrace(bg, true))
	var calls atomic.Int32
	run := func(ctx context.Context) error {
		if calls.Add(1) == 1 {
			if err := h.Reboot(ctx, 0, ""); err != nil {
				return err
			}
		}
		<-ctx.Done()
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- RunService(bg, h, run) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrRecoveryRequired) {
			t.Errorf("RunService = %v, want ErrRecoveryRequired", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RunService did not return")
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("run called %d times on a machine stuck in recovery", n)
	}
}

func TestPendingRebootAtNew(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fc := clockwork.NewFakeClockAt(t0)
	h := newHost(t, Config{StateDir: dir, Clock: fc})
	must(t, h.SetBCDDtrace(ctx, true))
	must(t, h.SetValue(deviceGuardKey, "EnableVirtualizationBasedSecurity", host.DWORD(1)))
	must(t, h.Reboot(ctx, time.Minute, "bye"))

	// The agent restarts before the delay has passed: no reboot yet.
	fc.Advance(30 * time.Second)
	r := newHost(t, Config{StateDir: dir, Clock: fc})
	if bt, _ := r.BootTime(ctx); !bt.Equal(t0) || r.DtraceDriverLoaded() {
		t.Errorf("rebooted before the delay: BootTime %v, driver loaded %v", bt, r.DtraceDriverLoaded())
	}
	// Later, with nobody watching, the machine rebooted.
	fc.Advance(time.Hour)
	r = newHost(t, Config{StateDir: dir, Clock: fc})
	if bt, _ := r.BootTime(ctx); !bt.Equal(fc.Now()) {
		t.Errorf("BootTime = %v, want %v", bt, fc.Now())
	}
	if !r.DtraceDriverLoaded() {
		t.Error("BCD not in effect after the reboot at New")
	}
	if s, _ := r.VBSStatus(ctx); s != host.VBSRunning {
		t.Errorf("VBSStatus = %v, want running", s)
	}
	if _, ok := r.pendingReboot(); ok {
		t.Error("request still pending")
	}
	// And the reboot is not repeated at the next start.
	fc.Advance(time.Hour)
	r = newHost(t, Config{StateDir: dir, Clock: fc})
	if bt, _ := r.BootTime(ctx); !bt.Equal(t0.Add(30*time.Second + time.Hour)) {
		t.Errorf("rebooted again at New: BootTime %v", bt)
	}
}

// TestPendingRebootAtNewRecovery: a reboot performed at New can meet
// BitLocker as well, and New then refuses the machine.
func TestPendingRebootAtNewRecovery(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fc := clockwork.NewFakeClockAt(t0)
	h := newHost(t, Config{StateDir: dir, Clock: fc, BitLocker: true})
	must(t, h.SetBCDDtrace(ctx, true))
	must(t, h.Reboot(ctx, 0, ""))
	if _, err := New(Config{StateDir: dir, Clock: fc}); !errors.Is(err, ErrRecoveryRequired) {
		t.Errorf("New = %v, want ErrRecoveryRequired", err)
	}
}
