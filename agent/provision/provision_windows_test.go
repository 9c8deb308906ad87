//go:build windows

package provision

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/windows"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/internal/profile"
)

// underWine reports whether this process runs under Wine, whose ntdll
// exports wine_get_version. The test below rewrites the machine's crash
// settings and boot flag: it runs in a throwaway Wine prefix, never on a
// real Windows machine.
func underWine() bool {
	return windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version").Find() == nil
}

// regQuery runs reg.exe, the administrator's tool, so the check does not
// trust the code under test to read back what it wrote.
func regQuery(t *testing.T, key string) (map[string]host.Value, bool) {
	t.Helper()
	dir, err := windows.GetSystemDirectory()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(dir, "reg.exe"), "query", key).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 {
		return nil, false // the key does not exist
	}
	if err != nil {
		t.Fatalf("reg query %s: %v\n%s", key, err, out)
	}
	vals, err := host.ParseRegQuery(string(out))
	if err != nil {
		t.Fatalf("reg query %s: %v\n%s", key, err, out)
	}
	return vals, true
}

func TestApplyRevertInTheWineRegistry(t *testing.T) {
	if !underWine() {
		t.Skip("needs Wine: changes the machine's crash and boot settings, so runs only in a throwaway Wine prefix")
	}
	ctx := context.Background()
	h := host.NewWindows()
	// Not t.TempDir: Go 1.26's RemoveAll uses a call Wine 8 lacks.
	dir, err := os.MkdirTemp("", "provision")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir) // best effort, see above
	p, err := New(Config{Host: h, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	prof := profile.Default()
	prof.InstallDTrace = false // Wine's msiexec is a stub; the MSI path is tested with the real installer elsewhere

	// A fresh prefix reports Windows 7: the build gate refuses it for real.
	build, err := h.GetValue(host.CurrentVersionKey, "CurrentBuildNumber")
	if err != nil {
		t.Fatal(err)
	}
	if build.Str == "7601" {
		r, err := p.Apply(ctx, prof, RebootNever, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.State != Blocked {
			t.Fatalf("Windows 7 prefix: state %s, want blocked", r.State)
		}
	}
	if err := h.SetValue(host.CurrentVersionKey, "CurrentBuildNumber", host.SZ("22631")); err != nil {
		t.Fatal(err)
	}
	defer h.SetValue(host.CurrentVersionKey, "CurrentBuildNumber", build)
	keys := []string{
		`HKLM\SYSTEM\CurrentControlSet\Control\CrashControl`,
		`HKLM\SYSTEM\CurrentControlSet\Control\CrashControl\FullLiveKernelReports`,
		`HKLM\SYSTEM\CurrentControlSet\Control\CrashControl\LiveKernelReports`,
	}
	type keyState struct {
		vals   map[string]host.Value
		exists bool
	}
	snapshot := func() []keyState {
		var s []keyState
		for _, k := range keys {
			v, ok := regQuery(t, k)
			s = append(s, keyState{v, ok})
		}
		return s
	}
	before := snapshot()
	bcdBefore, err := h.BCDDtrace(ctx)
	if err != nil {
		t.Fatal(err)
	}

	r, err := p.Apply(ctx, prof, RebootNever, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.State != RebootRequired {
		t.Fatalf("state %s (%s), want reboot-required; blockers %v", r.State, r.Detail, r.Blockers)
	}
	// Secure Boot and memory integrity are read from the prefix's registry
	// and the Device Guard double: a prefix has no UEFISecureBootEnabled,
	// as a legacy-BIOS machine.
	if notes := strings.Join(r.Notes, "\n"); !strings.Contains(notes, "Secure Boot: unknown") || !strings.Contains(notes, "memory integrity (HVCI): off") {
		t.Errorf("notes %q", r.Notes)
	}
	full, ok := regQuery(t, keys[1])
	if !ok {
		t.Fatal("FullLiveKernelReports key not created")
	}
	for name, want := range map[string]host.Value{
		"FullLiveReportsMax": host.DWORD(10), "SystemThrottleThreshold": host.DWORD(0), "ComponentThrottleThreshold": host.DWORD(0),
	} {
		if !full[name].Equal(want) {
			t.Errorf("reg query: %s = %v, want %v", name, full[name], want)
		}
	}
	cc, _ := regQuery(t, keys[0])
	if !cc["AlwaysKeepMemoryDump"].Equal(host.DWORD(1)) {
		t.Errorf("reg query: AlwaysKeepMemoryDump = %v", cc["AlwaysKeepMemoryDump"])
	}
	lkr, _ := regQuery(t, keys[2])
	if !lkr["LiveKernelReportsPath"].Equal(host.SZ(`\??\C:\livedumps`)) {
		t.Errorf("reg query: LiveKernelReportsPath = %v", lkr["LiveKernelReportsPath"])
	}
	if v, err := h.BCDDtrace(ctx); err != nil || !v.On {
		t.Fatalf("bcdedit dtrace = %v, %v after apply", v, err)
	}

	if _, err := p.Revert(ctx, prof, RebootNever); err != nil {
		t.Fatal(err)
	}
	after := snapshot()
	for i, k := range keys {
		if before[i].exists != after[i].exists || len(before[i].vals) != len(after[i].vals) {
			t.Errorf("%s: before revert exists=%v values=%v, after exists=%v values=%v", k, before[i].exists, before[i].vals, after[i].exists, after[i].vals)
			continue
		}
		for name, v := range before[i].vals {
			if !after[i].vals[name].Equal(v) {
				t.Errorf("%s %s: %v before, %v after revert", k, name, v, after[i].vals[name])
			}
		}
	}
	if v, err := h.BCDDtrace(ctx); err != nil || v != bcdBefore {
		t.Fatalf("bcdedit dtrace = %v, %v after revert, want %v", v, err, bcdBefore)
	}
}
