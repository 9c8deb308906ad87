package host

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestPendingReboot(t *testing.T) {
	const (
		cbs    = "component servicing (CBS) is waiting for a reboot"
		wu     = "Windows Update is waiting for a reboot"
		rename = "file renames are queued for the next boot (PendingFileRenameOperations)"
	)
	emptyKey := func(f *fakeHost, k string) { f.createKey(k) }
	for _, c := range []struct {
		name  string
		setup func(*fakeHost)
		want  []string
	}{
		{"clean", func(*fakeHost) {}, nil},
		{"cbs", func(f *fakeHost) { emptyKey(f, CBSRebootPendingKey) }, []string{cbs}},
		{"wu", func(f *fakeHost) { emptyKey(f, WURebootRequiredKey) }, []string{wu}},
		{"renames", func(f *fakeHost) {
			f.SetValue(SessionManagerKey, PendingFileRenameValue, MultiSZ(`\??\C:\a.tmp`, `\??\C:\a.dll`))
		}, []string{rename}},
		{"empty renames", func(f *fakeHost) { f.SetValue(SessionManagerKey, PendingFileRenameValue, MultiSZ()) }, nil},
		{"renames as REG_SZ", func(f *fakeHost) { f.SetValue(SessionManagerKey, PendingFileRenameValue, SZ(`\??\C:\x`)) }, []string{rename}},
		{"all", func(f *fakeHost) {
			emptyKey(f, CBSRebootPendingKey)
			emptyKey(f, WURebootRequiredKey)
			f.SetValue(SessionManagerKey, PendingFileRenameValue, MultiSZ(`\??\C:\x`))
		}, []string{cbs, wu, rename}},
		// Only the marker keys count, not their parents.
		{"parents only", func(f *fakeHost) {
			emptyKey(f, `HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing`)
			emptyKey(f, `HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update`)
			f.SetValue(SessionManagerKey, "BootExecute", MultiSZ("autocheck autochk *"))
		}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFake()
			c.setup(f)
			pending, reasons, err := PendingReboot(f)
			if err != nil {
				t.Fatal(err)
			}
			if pending != (len(c.want) > 0) || !reflect.DeepEqual(reasons, c.want) {
				t.Errorf("PendingReboot = %v, %q; want %q", pending, reasons, c.want)
			}
		})
	}
}

// failingRegistry fails the one call named in fail.
type failingRegistry struct {
	*fakeHost
	fail string
}

var errBroken = errors.New("registry broken")

func (r failingRegistry) KeyExists(key string) (bool, error) {
	if r.fail == key {
		return false, errBroken
	}
	return r.fakeHost.KeyExists(key)
}

func (r failingRegistry) GetValue(key, name string) (Value, error) {
	if r.fail == key {
		return Value{}, errBroken
	}
	return r.fakeHost.GetValue(key, name)
}

func TestPendingRebootErrors(t *testing.T) {
	for _, k := range []string{CBSRebootPendingKey, WURebootRequiredKey, SessionManagerKey} {
		pending, reasons, err := PendingReboot(failingRegistry{newFake(), k})
		if !errors.Is(err, errBroken) || pending || reasons != nil {
			t.Errorf("failing %s: PendingReboot = %v, %q, %v; want errBroken", k, pending, reasons, err)
		}
	}
}

func TestShutdownArgs(t *testing.T) {
	for _, c := range []struct {
		delay time.Duration
		msg   string
		want  string
	}{
		{0, "", "/r /t 0 /d p:4:1"},
		{90 * time.Second, "livedump: enabling DTrace (reboot 1 of 1).", "/r /t 90 /c livedump: enabling DTrace (reboot 1 of 1). /d p:4:1"},
		{1500 * time.Millisecond, "Redémarrage; merci!", "/r /t 2 /c Redémarrage; merci! /d p:4:1"},
		{MaxRebootDelay, strings.Repeat("é", MaxRebootMessage), "/r /t 600 /c " + strings.Repeat("é", MaxRebootMessage) + " /d p:4:1"},
	} {
		got, err := ShutdownArgs(c.delay, c.msg)
		if err != nil || strings.Join(got, " ") != c.want {
			t.Errorf("ShutdownArgs(%v, %q) = %q, %v; want %q", c.delay, c.msg, got, err, c.want)
		}
	}
	for _, c := range []struct {
		delay time.Duration
		msg   string
		want  string
	}{
		{-time.Second, "", "reboot delay"},
		{MaxRebootDelay + time.Nanosecond, "", "reboot delay"},
		{time.Hour, "", "reboot delay"},
		{0, `say "hi"`, "reboot message"},
		{0, "a\nb", "reboot message"},
		{0, "50%", "reboot message"},
		{0, "a & b", "reboot message"},
		{0, "a/b", "reboot message"},
		{0, "a\\b", "reboot message"},
		{0, "\xff", "reboot message"},
		{0, strings.Repeat("a", MaxRebootMessage+1), "reboot message"},
	} {
		if got, err := ShutdownArgs(c.delay, c.msg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ShutdownArgs(%v, %q) = %q, %v; want error naming %q", c.delay, c.msg, got, err, c.want)
		}
	}
}

func TestMSIExecArgs(t *testing.T) {
	got, err := MSIExecArgs(true, `C:\ProgramData\livedump\DTrace.amd64.msi`, `C:\ProgramData\livedump\logs\dtrace install.log`)
	want := []string{"/i", `C:\ProgramData\livedump\DTrace.amd64.msi`, "/qn", "/norestart", "/L*V", `C:\ProgramData\livedump\logs\dtrace install.log`}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("MSIExecArgs(install) = %q, %v; want %q", got, err, want)
	}
	got, err = MSIExecArgs(false, `d:\x.msi`, `d:\x.log`)
	want = []string{"/x", `d:\x.msi`, "/qn", "/norestart", "/L*V", `d:\x.log`}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("MSIExecArgs(uninstall) = %q, %v; want %q", got, err, want)
	}
	for _, bad := range []string{"", `x.msi`, `\x.msi`, `C:x.msi`, `C:\`, `\\server\share\x.msi`, `\\?\C:\x.msi`, `C:/x.msi`, `1:\x.msi`,
		`C:\a "b".msi`, "C:\\a\x00.msi", "C:\\a\n.msi", "C:\\a\t.msi", "C:\\a\x7f.msi", "C:\\a\u0085.msi", "C:\\\xff.msi"} {
		if _, err := MSIExecArgs(true, bad, `C:\x.log`); err == nil || !strings.HasPrefix(err.Error(), "msi: ") {
			t.Errorf("MSIExecArgs(msi %q) err = %v, want an msi path error", bad, err)
		}
		if _, err := MSIExecArgs(true, `C:\x.msi`, bad); err == nil || !strings.HasPrefix(err.Error(), "msi log: ") {
			t.Errorf("MSIExecArgs(log %q) err = %v, want a log path error", bad, err)
		}
	}
	if err := ValidateWindowsPath(`C:\Program Files\DTrace\dtrace.exe`); err != nil {
		t.Errorf("ValidateWindowsPath(dtrace.exe) = %v", err)
	}
}
