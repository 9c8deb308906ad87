package selftest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/agent/selftest"
	"github.com/livedump/livedump/sim"
	"github.com/livedump/livedump/sim/dtracesim"
)

// TestMain lets this test binary be the simulated dtrace, which the
// simulated host runs by re-executing the current program.
func TestMain(m *testing.M) {
	if os.Getenv(sim.EnvRunAs) == sim.RunAsDTrace {
		os.Exit(dtracesim.Main(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

type machine struct {
	noInstall, noBCD, noReboot bool
	free                       uint64
}

// newMachine builds a simulated Windows 11 machine; by default as
// provisioning leaves it: DTrace installed, the dtrace boot flag on,
// rebooted since.
func newMachine(t *testing.T, o machine) *sim.Host {
	t.Helper()
	ctx := context.Background()
	h, err := sim.New(sim.Config{StateDir: t.TempDir(), Hostname: "SIM-SELFTEST", FreeBytes: o.free})
	if err != nil {
		t.Fatal(err)
	}
	if !o.noInstall {
		pkg, err := sim.BuildMSI(sim.MSIManifest{Product: "DTrace", Version: "2.0.0", Files: map[string]string{
			`C:\Program Files\DTrace\dtrace.exe`:         "simulated dtrace.exe",
			`C:\Program Files\DTrace\drivers\dtrace.sys`: "simulated driver",
		}})
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		msi := filepath.Join(dir, "DTrace.msi")
		if err := os.WriteFile(msi, pkg, 0o600); err != nil {
			t.Fatal(err)
		}
		if code, err := h.InstallMSI(ctx, msi, filepath.Join(dir, "install.log")); err != nil || code != 0 {
			t.Fatalf("install DTrace: %d %v", code, err)
		}
	}
	if !o.noBCD {
		if err := h.SetBCDDtrace(ctx, true); err != nil {
			t.Fatal(err)
		}
		if !o.noReboot {
			if err := h.Boot(); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Setenv(dtracesim.EnvRate, "200")
	return h
}

func runSelftest(t *testing.T, cfg selftest.Config) selftest.Report {
	t.Helper()
	if cfg.WorkDir == "" {
		cfg.WorkDir = t.TempDir()
	}
	if cfg.FireTimeout == 0 {
		cfg.FireTimeout = 10 * time.Second
	}
	st, err := selftest.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := st.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	_ = rep.WriteText(&b)
	t.Logf("selftest:\n%s", b.String())
	return rep
}

func statuses(rep selftest.Report) map[string]selftest.Status {
	m := map[string]selftest.Status{}
	for _, c := range rep.Checks {
		m[c.Check] = c.Status
	}
	return m
}

func evidence(rep selftest.Report, check string) string {
	for _, c := range rep.Checks {
		if c.Check == check {
			return c.Evidence
		}
	}
	return ""
}

var allChecks = []string{
	selftest.CheckDTracePresent, selftest.CheckDTraceVersion, selftest.CheckDTraceDriver, selftest.CheckSyscallProbe,
	selftest.CheckCompile, selftest.CheckProbeFires, selftest.CheckLiveDumpEvents, selftest.CheckLiveDumpReg,
	selftest.CheckDiskFree, selftest.CheckSecureBootVBS,
}

func TestProvisionedMachinePasses(t *testing.T) {
	h := newMachine(t, machine{})
	rep := runSelftest(t, selftest.Config{Host: h})
	got := statuses(rep)
	if len(rep.Checks) != len(allChecks) {
		t.Fatalf("%d checks, want %d", len(rep.Checks), len(allChecks))
	}
	for i, c := range allChecks {
		if rep.Checks[i].Check != c {
			t.Errorf("check %d is %s, want %s", i, rep.Checks[i].Check, c)
		}
	}
	for _, c := range []string{selftest.CheckDTracePresent, selftest.CheckDTraceDriver, selftest.CheckSyscallProbe,
		selftest.CheckCompile, selftest.CheckProbeFires, selftest.CheckLiveDumpEvents, selftest.CheckLiveDumpReg, selftest.CheckDiskFree} {
		if got[c] != selftest.Pass {
			t.Errorf("%s: %s (%s), want PASS", c, got[c], evidence(rep, c))
		}
	}
	if rep.Failed() {
		t.Error("report says failed")
	}
	if ev := evidence(rep, selftest.CheckDTraceDriver); !strings.Contains(ev, "syscall") {
		t.Errorf("driver evidence does not name the syscall provider: %s", ev)
	}
	if rep.Hostname != "SIM-SELFTEST" || rep.OSBuild == "" {
		t.Errorf("report inventory: %+v", rep)
	}
	// The text format is one line per check: STATUS  check  evidence.
	var b bytes.Buffer
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`^(PASS|FAIL|UNKNOWN) +[a-z_.]+ {2,}\S.*$`)
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != len(allChecks) {
		t.Fatalf("%d lines, want %d", len(lines), len(allChecks))
	}
	for _, l := range lines {
		if !line.MatchString(l) {
			t.Errorf("line %q is not STATUS  check  evidence", l)
		}
	}
	b.Reset()
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Checks []struct{ Check, Status, Evidence string }
	}
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || len(back.Checks) != len(allChecks) {
		t.Fatalf("json: %v %s", err, b.String())
	}
}

// A machine where DTrace was never installed: the presence check fails
// and every dtrace check says it could not run, rather than failing on
// its own account.
func TestNoDTrace(t *testing.T) {
	h := newMachine(t, machine{noInstall: true, noBCD: true})
	rep := runSelftest(t, selftest.Config{Host: h})
	got := statuses(rep)
	if got[selftest.CheckDTracePresent] != selftest.Fail || !rep.Failed() {
		t.Errorf("dtrace.present %s, want FAIL", got[selftest.CheckDTracePresent])
	}
	for _, c := range []string{selftest.CheckDTraceVersion, selftest.CheckDTraceDriver, selftest.CheckSyscallProbe, selftest.CheckCompile, selftest.CheckProbeFires} {
		if got[c] != selftest.Unknown || !strings.HasPrefix(evidence(rep, c), "not run:") {
			t.Errorf("%s: %s %q, want UNKNOWN not run", c, got[c], evidence(rep, c))
		}
	}
}

// The boot flag set but the machine not rebooted: the driver is not
// loaded, and the driver check fails with dtrace's own words.
func TestDriverNotLoaded(t *testing.T) {
	h := newMachine(t, machine{noReboot: true})
	rep := runSelftest(t, selftest.Config{Host: h})
	got := statuses(rep)
	if got[selftest.CheckDTracePresent] != selftest.Pass {
		t.Errorf("dtrace.present %s", got[selftest.CheckDTracePresent])
	}
	for _, c := range []string{selftest.CheckDTraceDriver, selftest.CheckSyscallProbe, selftest.CheckProbeFires} {
		if got[c] != selftest.Fail {
			t.Errorf("%s: %s (%s), want FAIL", c, got[c], evidence(rep, c))
		}
	}
	if ev := evidence(rep, selftest.CheckDTraceDriver); !strings.Contains(ev, "dtrace") || !strings.Contains(ev, "bcdedit {current} dtrace: on") {
		t.Errorf("driver evidence: %s", ev)
	}
}

func TestLiveDumpsDisabledAndDiskShort(t *testing.T) {
	h := newMachine(t, machine{free: 4 << 30})
	if err := h.SetValue(`HKLM\SYSTEM\CurrentControlSet\Control\CrashControl\FullLiveKernelReports`, "FullLiveReportsMax", host.DWORD(0)); err != nil {
		t.Fatal(err)
	}
	rep := runSelftest(t, selftest.Config{Host: h})
	got := statuses(rep)
	if got[selftest.CheckLiveDumpReg] != selftest.Fail || !strings.Contains(evidence(rep, selftest.CheckLiveDumpReg), "FullLiveReportsMax is 0") {
		t.Errorf("registry: %s %s", got[selftest.CheckLiveDumpReg], evidence(rep, selftest.CheckLiveDumpReg))
	}
	if got[selftest.CheckDiskFree] != selftest.Fail || !strings.Contains(evidence(rep, selftest.CheckDiskFree), "4.0 GiB free") {
		t.Errorf("disk: %s %s", got[selftest.CheckDiskFree], evidence(rep, selftest.CheckDiskFree))
	}
	// expected_dump_bytes lowers what a dump needs.
	rep = runSelftest(t, selftest.Config{Host: h, ExpectedDumpBytes: 1 << 30})
	if got := statuses(rep)[selftest.CheckDiskFree]; got != selftest.Pass {
		t.Errorf("disk with expected_dump_bytes 1 GiB: %s", got)
	}
}

// A probe that does not fire within the bound fails the check, and the
// dtrace it ran is stopped.
func TestProbeFiresIsBounded(t *testing.T) {
	h := newMachine(t, machine{})
	t.Setenv(dtracesim.EnvRate, "0.001")
	start := time.Now()
	rep := runSelftest(t, selftest.Config{Host: h, FireTimeout: 500 * time.Millisecond})
	if got := statuses(rep)[selftest.CheckProbeFires]; got != selftest.Fail || !strings.Contains(evidence(rep, selftest.CheckProbeFires), "did not fire within 500ms") {
		t.Errorf("probe_fires: %s %s", got, evidence(rep, selftest.CheckProbeFires))
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("self-test took %s", d)
	}
}

// The self-test never changes the machine: the simulated registry and
// machine state are byte for byte the same afterwards.
func TestChangesNothing(t *testing.T) {
	h := newMachine(t, machine{})
	before, err := os.ReadFile(h.StatePath())
	if err != nil {
		t.Fatal(err)
	}
	runSelftest(t, selftest.Config{Host: h})
	after, err := os.ReadFile(h.StatePath())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Errorf("the machine state changed:\nbefore %s\nafter  %s", before, after)
	}
}

// One self-test at a time: a second one while the first runs is refused.
func TestOneAtATime(t *testing.T) {
	h := newMachine(t, machine{})
	t.Setenv(dtracesim.EnvRate, "0.001")
	st, err := selftest.New(selftest.Config{Host: h, WorkDir: t.TempDir(), FireTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _, _ = st.Run(context.Background()) }()
	time.Sleep(200 * time.Millisecond)
	if _, err := st.Run(context.Background()); !errors.Is(err, selftest.ErrBusy) {
		t.Errorf("second run: %v, want ErrBusy", err)
	}
	wg.Wait()
}
