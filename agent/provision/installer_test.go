package provision

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/internal/profile"
	"github.com/livedump/livedump/sim"
)

// TestInstallerPolicy applies with installers of every kind under several
// local policies: only what the policy allows reaches msiexec.
func TestInstallerPolicy(t *testing.T) {
	manifest := sim.MSIManifest{Product: "DTrace", Version: "2.0.0", Files: map[string]string{`C:\Program Files\DTrace\dtrace.exe`: "dtrace"}}
	unsigned, err := sim.BuildMSI(manifest)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(s sim.MSISigner) []byte {
		b, err := sim.SignMSI(unsigned, s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	dtrace := sign(sim.DTraceSigner)
	contoso := sign(sim.MSISigner{Publisher: "Contoso Code Signing", Organization: "Contoso Ltd"})
	selfSigned := sign(sim.MSISigner{Publisher: host.DTracePublisher, Untrusted: true})

	for _, tc := range []struct {
		name   string
		msi    []byte
		policy InstallerPolicy
		reason string // "" when it must install
		detail string
	}{
		{"DTrace publisher, default policy", dtrace, InstallerPolicy{}, "", ""},
		{"unsigned", unsigned, InstallerPolicy{}, refusedUnsigned, "is not signed (TRUST_E_NOSIGNATURE"},
		{"self-signed in Microsoft's name", selfSigned, InstallerPolicy{}, refusedInvalid, "is not valid (CERT_E_UNTRUSTEDROOT"},
		{"another publisher", contoso, InstallerPolicy{}, refusedPublisher, `is signed by "Contoso Code Signing" (O="Contoso Ltd"), not on installer_publishers`},
		{"another publisher, allowed by O", contoso, InstallerPolicy{Publishers: []string{"contoso ltd"}}, "", ""},
		{"no publisher allowed", dtrace, InstallerPolicy{Publishers: []string{}}, refusedPublisher, "not on installer_publishers"},
		{"unsigned, allowed by SHA-256", unsigned, InstallerPolicy{SHA256: []string{sum(unsigned)}}, "", ""},
		{"unsigned, another SHA-256 listed", unsigned, InstallerPolicy{SHA256: []string{sum(dtrace)}}, refusedUnsigned, "its sha256 " + sum(unsigned) + " is not on installer_sha256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, sim.Config{})
			reg := prometheus.NewRegistry()
			p, err := New(Config{Host: f.host, StateDir: filepath.Join(f.dir, "agent2"), Clock: f.clock, Installers: tc.policy, Metrics: reg})
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f.msi, tc.msi, 0o600); err != nil {
				t.Fatal(err)
			}
			prof := profile.Default()
			r, err := p.Apply(context.Background(), prof, RebootNever, f.source())
			if err != nil {
				t.Fatal(err)
			}
			installed, _ := f.host.FileExists(`C:\Program Files\DTrace\dtrace.exe`)
			var m dto.Metric
			if err := p.metrics.refused.WithLabelValues(tc.reason).Write(&m); err != nil {
				t.Fatal(err)
			}
			refused := m.GetCounter().GetValue()
			if tc.reason == "" {
				wantState(t, r, RebootRequired)
				if !installed || f.host.MsiexecRuns() != 1 {
					t.Fatalf("installed=%v after %d msiexec runs, want installed by one", installed, f.host.MsiexecRuns())
				}
				return
			}
			wantState(t, r, Failed)
			if !strings.HasPrefix(r.Detail, "dtrace.install: installer refused: ") || !strings.Contains(r.Detail, tc.detail) {
				t.Fatalf("detail %q, want installer refused ... %q", r.Detail, tc.detail)
			}
			if installed || f.host.MsiexecRuns() != 0 {
				t.Fatalf("refused, yet installed=%v after %d msiexec runs", installed, f.host.MsiexecRuns())
			}
			if refused != 1 {
				t.Fatalf("livedump_agent_installer_refused_total{reason=%q} = %v, want 1", tc.reason, refused)
			}
		})
	}
}

// TestUninstallVerifiesTheInstaller: revert runs msiexec /x with the MSI
// the install used; replaced by another package since, it is refused.
// TestUninstallByProductCode: revert removes DTrace with msiexec /x
// {ProductCode}, the code its install registered under the Uninstall key,
// not by running the MSI file the agent downloaded. That file may be gone or
// replaced by then (here: by an unsigned one) and is never run. (This test
// used to expect the revert to refuse the replaced file and leave DTrace
// installed.)
func TestUninstallByProductCode(t *testing.T) {
	f := newFixture(t, sim.Config{})
	prof := profile.Default()
	ctx := context.Background()
	if r, err := f.p.Apply(ctx, prof, RebootNever, f.source()); err != nil || r.State != RebootRequired {
		t.Fatalf("apply: %v %v", r, err)
	}
	j, err := loadJournal(filepath.Join(f.dir, "agent"))
	if err != nil || host.ValidateProductCode(j.ProductCode) != nil {
		t.Fatalf("journal product code %q, %v", j.ProductCode, err)
	}
	unsigned, err := sim.BuildMSI(sim.MSIManifest{Product: "DTrace", Version: "2.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.msi, unsigned, 0o600); err != nil {
		t.Fatal(err)
	}
	runs := f.host.MsiexecRuns()
	r, err := f.p.Revert(ctx, prof, RebootNever)
	if err != nil {
		t.Fatal(err)
	}
	if s := stepsByID(r)[stepInstall]; s.Outcome != OutcomeReverted || s.Error != "" {
		t.Fatalf("revert of the install step: %+v", s)
	}
	if f.host.MsiexecRuns() != runs+1 {
		t.Fatalf("msiexec ran %d times for the uninstall, want once", f.host.MsiexecRuns()-runs)
	}
	if ok, _ := f.host.FileExists(`C:\Program Files\DTrace\dtrace.exe`); ok {
		t.Fatal("DTrace still installed after the revert")
	}
	if p, _ := host.InstalledProducts(f.host); len(p) != 0 {
		t.Fatalf("Uninstall entries left: %+v", p)
	}
}

// Without a recorded code (a journal from before codes were recorded), the
// product is found by its DisplayName, "DTrace for Windows".
func TestUninstallFindsTheProductByName(t *testing.T) {
	f := newFixture(t, sim.Config{})
	ctx := context.Background()
	b, err := sim.BuildSignedMSI(sim.MSIManifest{Product: host.DTraceProductName, Version: "2.0.0",
		Files: map[string]string{`C:\Program Files\DTrace\dtrace.exe`: "dtrace"}}, sim.DTraceSigner)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.msi, b, 0o600); err != nil {
		t.Fatal(err)
	}
	prof := profile.Default()
	if _, err := f.p.Apply(ctx, prof, RebootNever, f.source()); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(f.dir, "agent")
	j, _ := loadJournal(dir)
	j.ProductCode = ""
	if err := j.save(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(f.msi); err != nil {
		t.Fatal(err)
	}
	r, err := f.p.Revert(ctx, prof, RebootNever)
	if err != nil {
		t.Fatal(err)
	}
	if s := stepsByID(r)[stepInstall]; s.Outcome != OutcomeReverted {
		t.Fatalf("revert of the install step: %+v", s)
	}
	if ok, _ := f.host.FileExists(`C:\Program Files\DTrace\dtrace.exe`); ok {
		t.Fatal("DTrace still installed after the revert")
	}
}

func TestInstallerPolicyValidate(t *testing.T) {
	for _, p := range []InstallerPolicy{
		{Publishers: []string{""}},
		{Publishers: []string{"a\nb"}},
		{Publishers: []string{strings.Repeat("x", MaxInstallerPublisher+1)}},
		{SHA256: []string{"ABC"}},
		{SHA256: []string{strings.Repeat("AB", 32)}},
	} {
		if err := p.Validate(); err == nil {
			t.Errorf("%+v accepted", p)
		}
		if _, err := New(Config{Host: newFixture(t, sim.Config{}).host, StateDir: t.TempDir(), Installers: p}); err == nil {
			t.Errorf("New with %+v accepted", p)
		}
	}
}
