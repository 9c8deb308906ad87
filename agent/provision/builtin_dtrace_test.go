package provision

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/internal/profile"
	"github.com/livedump/livedump/sim"
)

// TestServer2025UsesItsBuiltinDTrace: Windows Server 2025 ships dtrace in
// System32. It used to be blocked ("ships its own dtrace with other
// parameters"); now it is provisioned without the MSI (none is even
// offered here), the plan says which dtrace captures will run, and the
// boot flag is still set, since the built-in dtrace is enabled by bcdedit
// /set dtrace on and a reboot.
func TestServer2025UsesItsBuiltinDTrace(t *testing.T) {
	f := newFixture(t, sim.Config{Build: "26100", InstallationType: "Server"})
	ctx := context.Background()
	r, err := f.p.Plan(ctx, profile.Default(), nil)
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, NotProvisioned)
	inst := stepsByID(r)[stepInstall]
	if inst.Change || !strings.Contains(inst.Current, `built into Windows (C:\WINDOWS\System32\dtrace.exe)`) {
		t.Fatalf("install step %+v: want no MSI where dtrace is built in", inst)
	}
	if !stepsByID(r)[stepBCD].Change {
		t.Fatal("the built-in dtrace still needs bcdedit /set dtrace on")
	}
	if !slices.ContainsFunc(r.Notes, func(n string) bool {
		return strings.HasPrefix(n, `dtrace: Windows' built-in C:\WINDOWS\System32\dtrace.exe`)
	}) {
		t.Fatalf("plan notes %q do not say which dtrace is used", r.Notes)
	}
	r, err = f.p.Apply(ctx, profile.Default(), RebootNever, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, RebootRequired)
	if n := f.host.MsiexecRuns(); n != 0 {
		t.Fatalf("msiexec ran %d times on a machine with the built-in dtrace", n)
	}
	f.boot()
	if r, err = f.p.State(ctx); err != nil {
		t.Fatal(err)
	}
	wantState(t, r, Ready)
	if d, _ := f.host.DTrace(); d.Kind != host.DTraceBuiltin {
		t.Fatalf("the machine runs %v", d)
	}
}

// TestDTraceFoundByFileNotBuild: a Server 2025 build without the file (a
// build number alone proves nothing) gets the MSI; a client with the file
// (newer Windows 11 builds may ship it) does not.
func TestDTraceFoundByFileNotBuild(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, sim.Config{Build: "26100", InstallationType: "Server"})
	if err := removeBuiltin(f.host); err != nil {
		t.Fatal(err)
	}
	r, err := f.p.Plan(ctx, profile.Default(), f.source())
	if err != nil {
		t.Fatal(err)
	}
	if s := stepsByID(r)[stepInstall]; !s.Change || s.Current != dtraceMissing {
		t.Fatalf("Server 2025 without System32\\dtrace.exe: install step %+v", s)
	}

	f = newFixture(t, sim.Config{Build: "26100"})
	if err := placeBuiltin(f.host); err != nil {
		t.Fatal(err)
	}
	r, err = f.p.Plan(ctx, profile.Default(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := stepsByID(r)[stepInstall]; s.Change {
		t.Fatalf("client with System32\\dtrace.exe: install step %+v", s)
	}
	wantState(t, r, NotProvisioned)
}

func builtinPath(h *sim.Host) (string, error) {
	return h.HostPath(host.BuiltinDTracePath(h))
}

func removeBuiltin(h *sim.Host) error {
	p, err := builtinPath(h)
	if err != nil {
		return err
	}
	return os.Remove(p)
}

func placeBuiltin(h *sim.Host) error {
	p, err := builtinPath(h)
	if err != nil {
		return err
	}
	return os.WriteFile(p, []byte("MZ"), 0o755)
}
