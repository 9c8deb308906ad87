package provision

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/internal/profile"
	"github.com/livedump/livedump/sim"
)

type fixture struct {
	t     *testing.T
	dir   string
	clock *clockwork.FakeClock
	host  *sim.Host
	p     *Provisioner
	msi   string
}

func newFixture(t *testing.T, cfg sim.Config) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: t.TempDir(), clock: clockwork.NewFakeClockAt(time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC))}
	cfg.StateDir = filepath.Join(f.dir, "host")
	cfg.Clock = f.clock
	var err error
	if f.host, err = sim.New(cfg); err != nil {
		t.Fatal(err)
	}
	f.p, err = New(Config{Host: f.host, StateDir: filepath.Join(f.dir, "agent"), Clock: f.clock})
	if err != nil {
		t.Fatal(err)
	}
	f.msi = f.writeMSI("dtrace.msi", 0)
	return f
}

func (f *fixture) writeMSI(name string, exit int) string {
	b, err := sim.BuildSignedMSI(sim.MSIManifest{Product: "DTrace", Version: "2.0.0", ExitCode: exit,
		Files: map[string]string{`C:\Program Files\DTrace\dtrace.exe`: "dtrace"}}, sim.DTraceSigner)
	if err != nil {
		f.t.Fatal(err)
	}
	p := filepath.Join(f.dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		f.t.Fatal(err)
	}
	return p
}

func (f *fixture) source() MSISource {
	return func(context.Context) (string, error) { return f.msi, nil }
}

// snapshot is everything provisioning may touch on the simulated machine:
// the registry, the stored boot flag and the installed products.
func (f *fixture) snapshot() string {
	f.t.Helper()
	b, err := os.ReadFile(f.host.StatePath())
	if err != nil {
		f.t.Fatal(err)
	}
	var st struct {
		Keys    json.RawMessage `json:"keys"`
		Machine struct {
			BCD      string          `json:"bcd_dtrace"`
			Products json.RawMessage `json:"products"`
		} `json:"machine"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		f.t.Fatal(err)
	}
	return string(st.Keys) + "\nbcd=" + st.Machine.BCD + "\nproducts=" + string(st.Machine.Products)
}

func (f *fixture) boot() {
	f.t.Helper()
	f.clock.Advance(time.Minute)
	if err := f.host.Boot(); err != nil {
		f.t.Fatal(err)
	}
	f.clock.Advance(time.Second)
}

func stepsByID(r Report) map[string]StepResult {
	m := map[string]StepResult{}
	for _, s := range r.Steps {
		m[s.ID] = s
	}
	return m
}

func wantState(t *testing.T, r Report, want State) {
	t.Helper()
	if r.State != want {
		t.Fatalf("state = %s (%s), want %s; blockers %v", r.State, r.Detail, want, r.Blockers)
	}
}

func TestPlanShowsEveryStep(t *testing.T) {
	f := newFixture(t, sim.Config{})
	before := f.snapshot()
	r, err := f.p.Plan(context.Background(), profile.Default(), f.source())
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, NotProvisioned)
	want := []string{stepReportsMax, stepSysThrottle, stepCompThrottle, stepKeepDump, stepReportsPath, stepSymbolPath, stepInstall, stepBCD}
	var got []string
	for _, s := range r.Steps {
		got = append(got, s.ID)
		if !s.Change || s.Outcome != OutcomePlanned {
			t.Errorf("step %s: change=%v outcome=%s, want a planned change", s.ID, s.Change, s.Outcome)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("steps %v, want %v", got, want)
	}
	s := stepsByID(r)
	if s[stepReportsMax].Current != "(not set)" || !strings.Contains(s[stepReportsMax].Desired, "(10)") {
		t.Errorf("FullLiveReportsMax shown as %q -> %q", s[stepReportsMax].Current, s[stepReportsMax].Desired)
	}
	if !s[stepBCD].NeedsReboot || s[stepReportsPath].Desired != `REG_SZ "\??\C:\livedumps"` {
		t.Errorf("bcd/path steps wrong: %+v %+v", s[stepBCD], s[stepReportsPath])
	}
	if after := f.snapshot(); after != before {
		t.Fatal("plan changed the machine")
	}
}

func TestApplyRebootRevertRestoresExactly(t *testing.T) {
	f := newFixture(t, sim.Config{})
	ctx := context.Background()
	// A value the machine already had: revert must put it back, not delete it.
	if err := f.host.SetValue(crashControlKey, "AlwaysKeepMemoryDump", host.DWORD(0)); err != nil {
		t.Fatal(err)
	}
	before := f.snapshot()

	r, err := f.p.Apply(ctx, profile.Default(), RebootNever, f.source())
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, RebootRequired)
	if !r.RebootRequired {
		t.Fatal("reboot not reported as required")
	}
	for _, s := range r.Steps {
		if s.Outcome != OutcomeApplied {
			t.Errorf("step %s outcome %s", s.ID, s.Outcome)
		}
	}
	v, err := f.host.GetValue(fullLiveKey, "FullLiveReportsMax")
	if err != nil || !v.Equal(host.DWORD(10)) {
		t.Fatalf("FullLiveReportsMax = %v, %v", v, err)
	}
	if ok, _ := f.host.FileExists(`C:\Program Files\DTrace\dtrace.exe`); !ok {
		t.Fatal("DTrace not installed")
	}
	if f.host.DtraceDriverLoaded() {
		t.Fatal("the boot flag took effect without a reboot")
	}

	// Applying again changes nothing and keeps the original prior values.
	r, err = f.p.Apply(ctx, profile.Default(), RebootNever, f.source())
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, RebootRequired)
	for _, s := range r.Steps {
		if s.Outcome != OutcomeUnchanged {
			t.Errorf("second apply: step %s outcome %s", s.ID, s.Outcome)
		}
	}

	f.boot()
	r, err = f.p.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, Ready)
	if !f.host.DtraceDriverLoaded() {
		t.Fatal("dtrace boot flag not effective after reboot")
	}
	if sp, _ := f.p.SymbolPath(); sp != profile.DefaultSymbolPath {
		t.Fatalf("symbol path %q", sp)
	}

	r, err = f.p.Revert(ctx, profile.Default(), RebootNever)
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, RebootRequired)
	if after := f.snapshot(); after != before {
		t.Fatalf("revert did not restore the machine exactly:\nbefore: %s\nafter:  %s", before, after)
	}
	f.boot()
	r, err = f.p.Plan(ctx, profile.Default(), f.source())
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, NotProvisioned)
	if n := len(r.Steps); n != 8 || !r.Steps[0].Change {
		t.Fatalf("plan after revert: %d steps, first change=%v", n, r.Steps[0].Change)
	}
	if s := stepsByID(r)[stepKeepDump]; s.Current != "REG_DWORD 0x00000000 (0)" {
		t.Fatalf("pre-existing AlwaysKeepMemoryDump came back as %q", s.Current)
	}
}

// failingHost fails one operation once, as a crash or a transient error
// would in the middle of an apply.
type failingHost struct {
	*sim.Host
	failBCD bool
}

func (h *failingHost) SetBCDDtrace(ctx context.Context, on bool) error {
	if h.failBCD {
		h.failBCD = false
		return errors.New("bcdedit: The boot configuration data store could not be opened")
	}
	return h.Host.SetBCDDtrace(ctx, on)
}

func TestInterruptedApplyResumes(t *testing.T) {
	f := newFixture(t, sim.Config{})
	ctx := context.Background()
	before := f.snapshot()
	fh := &failingHost{Host: f.host, failBCD: true}
	p, err := New(Config{Host: fh, StateDir: filepath.Join(f.dir, "agent"), Clock: f.clock})
	if err != nil {
		t.Fatal(err)
	}
	r, err := p.Apply(ctx, profile.Default(), RebootNever, f.source())
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, Failed)
	if !strings.HasPrefix(r.Detail, stepBCD+": ") || stepsByID(r)[stepBCD].Outcome != OutcomeFailed {
		t.Fatalf("failure not attributed to the bcd step: %q", r.Detail)
	}
	// The agent restarts: a new Provisioner reads the journal and reports it.
	p, _ = New(Config{Host: fh, StateDir: filepath.Join(f.dir, "agent"), Clock: f.clock})
	st, err := p.Plan(ctx, profile.Default(), f.source())
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, st, Failed)

	r, err = p.Apply(ctx, profile.Default(), RebootNever, f.source())
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, RebootRequired)
	s := stepsByID(r)
	if s[stepBCD].Outcome != OutcomeApplied || s[stepReportsMax].Outcome != OutcomeUnchanged {
		t.Fatalf("resume redid finished steps or skipped the failed one: %+v", r.Steps)
	}
	if _, err := p.Revert(ctx, profile.Default(), RebootNever); err != nil {
		t.Fatal(err)
	}
	if after := f.snapshot(); after != before {
		t.Fatalf("revert after an interrupted apply did not restore the machine:\nbefore: %s\nafter:  %s", before, after)
	}
}

func TestBitLockerBlocks(t *testing.T) {
	f := newFixture(t, sim.Config{BitLocker: true})
	ctx := context.Background()
	before := f.snapshot()
	r, err := f.p.Apply(ctx, profile.Default(), RebootIfNeeded, f.source())
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, Blocked)
	if !strings.HasPrefix(r.Detail, "BitLocker is on for C:") {
		t.Fatalf("detail %q", r.Detail)
	}
	for _, s := range r.Steps {
		if s.Change && s.Outcome != OutcomeSkipped {
			t.Errorf("step %s outcome %s on a blocked host", s.ID, s.Outcome)
		}
	}
	if after := f.snapshot(); after != before {
		t.Fatal("apply changed a blocked host")
	}

	// Without the boot flag there is nothing BitLocker guards.
	prof := profile.Default()
	prof.DTraceBCD = false
	r, err = f.p.Plan(ctx, prof, f.source())
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, NotProvisioned)
}

func TestBitLockerSuspendedForOneReboot(t *testing.T) {
	f := newFixture(t, sim.Config{BitLocker: true})
	ctx := context.Background()
	prof := profile.Default()
	prof.AllowBitLockerSuspend = true
	prof.RebootDelay = 30 * time.Second
	r, err := f.p.Apply(ctx, prof, RebootIfNeeded, f.source())
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, Rebooting)
	if want := f.clock.Now().Add(30 * time.Second); !r.RebootAt.Equal(want) {
		t.Fatalf("reboot at %v, want %v", r.RebootAt, want)
	}
	if st, _ := f.host.BitLockerStatus(ctx, "C:"); st != host.BitLockerOff {
		t.Fatalf("BitLocker %v before the reboot, want suspended (off)", st)
	}
	f.boot()
	if f.host.RecoveryRequired() {
		t.Fatal("the reboot demanded the BitLocker recovery key")
	}
	if st, _ := f.host.BitLockerStatus(ctx, "C:"); st != host.BitLockerOn {
		t.Fatalf("BitLocker %v after the reboot, want protection back on", st)
	}
	r, err = f.p.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, Ready)
}

func TestBlockers(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  sim.Config
		prof func(*profile.Profile)
		want string
	}{
		{"old client build", sim.Config{Build: "18363"}, nil, "Windows build 18363 is too old"},
		{"old server build", sim.Config{Build: "17763", InstallationType: "Server"}, nil, "Windows build 17763 is too old"},
		{"excluded edition", sim.Config{Edition: "Core"}, func(p *profile.Profile) { p.UnsupportedEditions = []string{"Core"} }, "unsupported edition: Core"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.cfg)
			prof := profile.Default()
			if tc.prof != nil {
				tc.prof(&prof)
			}
			r, err := f.p.Apply(context.Background(), prof, RebootIfNeeded, f.source())
			if err != nil {
				t.Fatal(err)
			}
			wantState(t, r, Blocked)
			if !strings.Contains(r.Detail, tc.want) {
				t.Fatalf("detail %q does not say %q", r.Detail, tc.want)
			}
		})
	}
	f := newFixture(t, sim.Config{Build: "18981"})
	r, err := f.p.Plan(context.Background(), profile.Default(), f.source())
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, NotProvisioned)
}

func TestNonX64Blocked(t *testing.T) {
	f := newFixture(t, sim.Config{})
	if err := f.host.SetValue(host.EnvironmentKey, "PROCESSOR_ARCHITECTURE", host.SZ("ARM64")); err != nil {
		t.Fatal(err)
	}
	r, err := f.p.Plan(context.Background(), profile.Default(), f.source())
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, r, Blocked)
	if !strings.HasPrefix(r.Detail, "not x64") {
		t.Fatalf("detail %q", r.Detail)
	}
}

func TestMSIOutcomes(t *testing.T) {
	ctx := context.Background()
	t.Run("1603 fails the step", func(t *testing.T) {
		f := newFixture(t, sim.Config{})
		f.msi = f.writeMSI("bad.msi", host.MSIFatal)
		r, err := f.p.Apply(ctx, profile.Default(), RebootNever, f.source())
		if err != nil {
			t.Fatal(err)
		}
		wantState(t, r, Failed)
		if !strings.Contains(r.Detail, "msiexec exit 1603") || !strings.Contains(r.Detail, "log ") {
			t.Fatalf("detail %q", r.Detail)
		}
		if stepsByID(r)[stepBCD].Outcome != OutcomePlanned {
			t.Fatal("steps after the failed one ran")
		}
	})
	t.Run("3010 needs a reboot", func(t *testing.T) {
		f := newFixture(t, sim.Config{})
		f.msi = f.writeMSI("reboot.msi", host.MSIRebootRequired)
		prof := profile.Default()
		prof.DTraceBCD = false
		r, err := f.p.Apply(ctx, prof, RebootNever, f.source())
		if err != nil {
			t.Fatal(err)
		}
		wantState(t, r, RebootRequired)
		f.boot()
		// DTrace is installed and rebooted, but without the boot flag the
		// driver is not loaded: the driver check says so, with the cause.
		// (This test used to expect "ready".)
		r, _ = f.p.State(ctx)
		wantState(t, r, Failed)
		if !strings.Contains(r.Detail, "DTrace device not available on system") || !strings.Contains(r.Detail, "bcdedit /set dtrace on") {
			t.Fatalf("detail %q", r.Detail)
		}
	})
	t.Run("no MSI blocks the install", func(t *testing.T) {
		f := newFixture(t, sim.Config{})
		r, err := f.p.Apply(ctx, profile.Default(), RebootNever, nil)
		if err != nil {
			t.Fatal(err)
		}
		wantState(t, r, Blocked)
		if !strings.Contains(r.Detail, "no DTrace MSI") {
			t.Fatalf("detail %q", r.Detail)
		}
	})
}

func TestVBSStep(t *testing.T) {
	f := newFixture(t, sim.Config{})
	ctx := context.Background()
	prof := profile.Default()
	prof.VBS = true
	r, err := f.p.Apply(ctx, prof, RebootNever, f.source())
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := stepsByID(r)[stepVBS]; !ok || !s.NeedsReboot || s.Outcome != OutcomeApplied {
		t.Fatalf("VBS step: %+v", s)
	}
	f.boot()
	if st, _ := f.host.VBSStatus(ctx); st != host.VBSRunning {
		t.Fatalf("VBS %v after reboot", st)
	}
	r, err = f.p.Plan(ctx, prof, f.source())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(r.Notes, "VBS is running now") {
		t.Fatalf("notes %q", r.Notes)
	}
}

func TestPendingWindowsRebootIsNoted(t *testing.T) {
	f := newFixture(t, sim.Config{})
	if err := f.host.SetValue(host.SessionManagerKey, host.PendingFileRenameValue, host.MultiSZ(`\??\C:\x.tmp`, `\??\C:\y.tmp`)); err != nil {
		t.Fatal(err)
	}
	r, err := f.p.Plan(context.Background(), profile.Default(), f.source())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(r.Notes, func(n string) bool { return strings.HasPrefix(n, "Windows is already waiting for a reboot") }) {
		t.Fatalf("notes %q", r.Notes)
	}
	wantState(t, r, NotProvisioned)
}

func TestRebootIfNeededThroughTheServiceManager(t *testing.T) {
	f := newFixture(t, sim.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	prof := profile.Default()
	prof.RebootDelay = 10 * time.Second
	runs := make(chan Report, 4)
	done := make(chan error, 1)
	go func() {
		first := true
		done <- sim.RunService(ctx, f.host, func(ctx context.Context) error {
			// Each boot starts a fresh agent, which reports its state.
			p, err := New(Config{Host: f.host, StateDir: filepath.Join(f.dir, "agent"), Clock: f.clock})
			if err != nil {
				return err
			}
			if first {
				first = false
				r, err := p.Apply(ctx, prof, RebootIfNeeded, f.source())
				if err != nil {
					return err
				}
				runs <- r
			} else {
				r, err := p.State(ctx)
				if err != nil {
					return err
				}
				runs <- r
			}
			<-ctx.Done()
			return nil
		})
	}()
	r := <-runs
	wantState(t, r, Rebooting)
	f.clock.BlockUntilContext(ctx, 1)
	f.clock.Advance(11 * time.Second)
	select {
	case r = <-runs:
	case <-time.After(10 * time.Second):
		t.Fatal("the machine did not reboot")
	}
	wantState(t, r, Ready)
	cancel()
	<-done
}
