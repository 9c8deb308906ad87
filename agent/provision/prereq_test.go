package provision

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/internal/profile"
	"github.com/livedump/livedump/sim"
)

func hasNote(r Report, prefix string) bool {
	return slices.ContainsFunc(r.Notes, func(n string) bool { return strings.HasPrefix(n, prefix) })
}

// Secure Boot and memory integrity are read and reported on every plan and
// state, provisioned or not.
func TestSecurityStateAlwaysReported(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, sim.Config{HVCI: true})
	st, err := f.p.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, st, NotProvisioned)
	if !hasNote(st, "Secure Boot: on (UEFISecureBootEnabled=1)") || !hasNote(st, "memory integrity (HVCI): on") {
		t.Fatalf("state notes %q", st.Notes)
	}
	r, err := f.p.Plan(ctx, profile.Default(), f.source())
	if err != nil {
		t.Fatal(err)
	}
	if !hasNote(r, "Secure Boot: on") || !hasNote(r, "memory integrity (HVCI): on") || !strings.Contains(strings.Join(r.Notes, "\n"), "issue #64") {
		t.Fatalf("plan notes %q", r.Notes)
	}

	f = newFixture(t, sim.Config{NoSecureBoot: true})
	r, err = f.p.Plan(ctx, profile.Default(), f.source())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(r.Notes, "Secure Boot: off") || !slices.Contains(r.Notes, "memory integrity (HVCI): off") {
		t.Fatalf("plan notes %q", r.Notes)
	}
}

// With memory integrity running the driver does not load: after the apply
// and the reboot the machine is not ready but blocked, with dtrace's own
// message and the advice for that cause; turning memory integrity off and
// rebooting makes it ready.
func TestDriverCheckBlocksOnMemoryIntegrity(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, sim.Config{HVCI: true})
	r, err := f.p.Apply(ctx, profile.Default(), RebootNever, f.source())
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, RebootRequired)
	f.boot()
	r, err = f.p.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, Blocked)
	for _, w := range []string{"dtrace -ln syscall::NtClose:return", "dtrace: failed to initialize dtrace: DTrace device not available on system", "memory integrity (HVCI) is on: turn it off", "issue #64"} {
		if !strings.Contains(r.Detail, w) {
			t.Errorf("detail lacks %q: %s", w, r.Detail)
		}
	}
	if len(r.Blockers) != 1 || r.Blockers[0] != r.Detail {
		t.Errorf("blockers %q", r.Blockers)
	}

	if err := f.host.SetValue(host.HVCIKey, host.HVCIValue, host.DWORD(0)); err != nil {
		t.Fatal(err)
	}
	f.boot()
	r, err = f.p.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, Ready)
	if !hasNote(r, "DTrace driver works") {
		t.Errorf("notes %q", r.Notes)
	}
}

// The driver check runs dtrace: a dtrace that lists no syscall probe (the
// driver does not match the build) fails the check with that advice.
func TestDriverCheckNoSyscallProbe(t *testing.T) {
	if got := listsProbe("   ID   PROVIDER            MODULE                          FUNCTION NAME\r\n    1     dtrace                                                     BEGIN\r\n"); got {
		t.Fatal("a listing without the probe passed")
	}
	if !listsProbe("   ID   PROVIDER            MODULE                          FUNCTION NAME\n  412    syscall                                             NtClose return\n") {
		t.Fatal("the probe's line was not recognized")
	}
	adv, sec := driverAdvice("listed no syscall probe (only the dtrace provider?)", host.BootSecurity{}, host.BCDValue{Present: true, On: true})
	if sec || !strings.Contains(adv, "does not match this Windows build") {
		t.Errorf("advice %q, security %v", adv, sec)
	}
	adv, sec = driverAdvice("failed: dtrace: failed to initialize dtrace: DTrace device not available on system", host.BootSecurity{SecureBoot: host.StateOn, HVCIRunning: host.StateOff}, host.BCDValue{Present: true, On: true})
	if !sec || !strings.Contains(adv, "Secure Boot is on") {
		t.Errorf("advice %q, security %v", adv, sec)
	}
}

// A Windows Server without the BitLocker feature has no BitLocker WMI
// namespace: that is BitLocker off, and provisioning goes ahead, reboot
// included, without asking to suspend anything.
func TestServerWithoutBitLockerProvisions(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, sim.Config{InstallationType: "Server", Build: "20348", NoBitLockerFeature: true})
	prof := profile.Default()
	r, err := f.p.Apply(ctx, prof, RebootIfNeeded, f.source())
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, Rebooting)
	f.boot()
	r, err = f.p.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, Ready)
}

// A changed LiveKernelReportsPath is marked as needing a reboot; it is not
// a boot configuration change, so BitLocker does not block it.
func TestLiveKernelReportsPathNeedsReboot(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, sim.Config{BitLocker: true})
	prof := profile.Default()
	prof.DTraceBCD, prof.InstallDTrace = false, false
	// Everything but the path already as the profile wants it.
	prof.LiveKernelReportsPath = `\??\D:\dumps`
	r, err := f.p.Plan(ctx, prof, f.source())
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, NotProvisioned)
	if s := stepsByID(r)[stepReportsPath]; !s.NeedsReboot || !s.Change {
		t.Fatalf("path step %+v, want a change that needs a reboot", s)
	}
	r, err = f.p.Apply(ctx, prof, RebootNever, f.source())
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, RebootRequired)
	if !r.RebootRequired {
		t.Fatal("reboot not reported as required")
	}
}

// The journal of a revert after an install remembers no product code.
func TestRevertForgetsProductCode(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, sim.Config{})
	if _, err := f.p.Apply(ctx, profile.Default(), RebootNever, f.source()); err != nil {
		t.Fatal(err)
	}
	if _, err := f.p.Revert(ctx, profile.Default(), RebootNever); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(f.dir, "agent", JournalFile))
	if err != nil || strings.Contains(string(b), "product_code") {
		t.Fatalf("journal after revert: %s, %v", b, err)
	}
}
