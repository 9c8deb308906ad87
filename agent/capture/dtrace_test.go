package capture

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/livedump/livedump/agent/host"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/sim"
	"github.com/livedump/livedump/sim/dtracesim"
)

// TestMain lets this test binary be the simulated dtrace, as the livedump
// binaries are in dev mode: the simulated host re-executes it.
func TestMain(m *testing.M) {
	if os.Getenv(sim.EnvRunAs) == sim.RunAsDTrace {
		os.Exit(dtracesim.Main(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

const noProbes = `dtrace: failed to compile script c.d: line 12: probe description syscall::NtUserGetMessage:return does not match any probes`

// TestCompileErrorIsPermanent: dtrace refusing the script is the target's
// failure, with dtrace's words, and dtrace is not started again. Before
// the compile step, the same dtrace (which refuses the script whenever it
// runs) was taken for a crash: restarted three times with backoff, then
// "dtrace failed 4 times".
func TestCompileErrorIsPermanent(t *testing.T) {
	refuse := `echo "` + noProbes + `" >&2; exit 1`
	m, sh, rec, _ := setupIn(t, t.TempDir(), refuse, nil)
	sh.compile = refuse
	if err := m.Arm(arm("c-noprobe", 5, time.Now().Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	detail := waitState(t, rec, "c-noprobe", livedumpv1.TargetState_TARGET_STATE_FAILED)
	if !strings.Contains(detail, noProbes) || !strings.Contains(detail, "not restarted") {
		t.Fatalf("detail %q does not carry dtrace's message", detail)
	}
	time.Sleep(200 * time.Millisecond) // several restart backoffs
	sh.mu.Lock()
	starts, compiles := sh.starts, sh.compiles
	sh.mu.Unlock()
	if starts != 0 || compiles != 1 {
		t.Fatalf("dtrace ran %d times and compiled %d times; want 0 and 1", starts, compiles)
	}
	if n := testutil.ToFloat64(m.restarts); n != 0 {
		t.Fatalf("%v restarts", n)
	}
}

// TestSimulatedDTraceRefusesWin32kSyscalls runs the real simulated dtrace
// on a provisioned simulated machine: a capture of NtUserGetMessage (a
// win32k syscall, which has no syscall probe on Windows) fails at once with
// dtrace's own message.
func TestSimulatedDTraceRefusesWin32kSyscalls(t *testing.T) {
	t.Setenv(dtracesim.EnvRate, "200")
	dir := t.TempDir()
	h, err := sim.New(sim.Config{StateDir: filepath.Join(dir, "host"), Build: "26100", InstallationType: "Server"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := h.SetBCDDtrace(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := h.Boot(); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	m, err := New(Config{Host: h, StateDir: filepath.Join(dir, "agent"), AgentID: func() string { return "0123456789abcdef" },
		Sender: rec, RestartMin: 10 * time.Millisecond, RestartMax: 40 * time.Millisecond, MaxRestarts: 3,
		SymbolPath:      func() string { return `srv*C:\symbols*https://msdl.microsoft.com/download/symbols` },
		AllowRawScripts: true})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { m.Run(rctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	// A templated capture naming a win32k syscall never reaches dtrace:
	// the spec check refuses it on the agent too.
	spec := arm("c-win32k-spec", 5, time.Now().Add(time.Hour))
	spec.Syscalls = []string{"NtCreateFile", "NtUserGetMessage"}
	if err := m.Arm(spec); err == nil || !strings.Contains(err.Error(), "win32k") {
		t.Fatalf("Arm of a win32k syscall: %v, want a refusal naming win32k", err)
	}
	// A raw script naming one gets as far as dtrace, whose compile-only
	// run refuses it for good.
	bad := arm("c-win32k", 5, time.Now().Add(time.Hour))
	bad.Script = "syscall::NtUserGetMessage:return { printf(\"%d\", arg0); }"
	if err := m.Arm(bad); err != nil {
		t.Fatal(err)
	}
	detail := waitState(t, rec, "c-win32k", livedumpv1.TargetState_TARGET_STATE_FAILED)
	if !strings.Contains(detail, "dtrace: failed to compile script ") || !strings.Contains(detail, "probe description syscall::NtUserGetMessage:return does not match any probes") {
		t.Fatalf("detail %q", detail)
	}
	// The built-in dtrace (Server 2025) gets -y: the simulated one refuses
	// it on an MSI machine, so a capture that runs proves the parameters.
	good := arm("c-ntcreate", 2, time.Now().Add(time.Hour))
	good.Syscalls = []string{"NtCreateFile"}
	if err := m.Arm(good); err != nil {
		t.Fatal(err)
	}
	if d := waitState(t, rec, "c-ntcreate", livedumpv1.TargetState_TARGET_STATE_DONE); !strings.Contains(d, "exit()") {
		t.Fatalf("detail %q", d)
	}
	if n := testutil.ToFloat64(m.compileFailures); n != 1 {
		t.Fatalf("%v compile failures counted, want 1", n)
	}
}

// TestDropsAndProbeErrorsAreCounted: the lines dtrace prints on stderr when
// it loses data are counted on the agent's metrics and shown on the
// target's detail, while the records that arrived are still events.
func TestDropsAndProbeErrorsAreCounted(t *testing.T) {
	script := `echo "dtrace: 1200 drops on CPU 0" >&2; echo "dtrace: 33 drops on CPU 3" >&2; ` +
		`printf 'dtrace: 1 drop on CPU 1\r\n' >&2; echo "dtrace: 2 aggregation drops on CPU 2" >&2; ` +
		`echo "dtrace: error on enabled probe ID 4 (ID 175: syscall::NtCreateFile:return): invalid address (0x0) in action #3 at DIF offset 28" >&2; ` +
		framed(1) + ` sleep 30`
	reg := prometheus.NewRegistry()
	m, _, rec, _ := setupIn(t, t.TempDir(), script, func(c *Config) { c.Metrics = reg })
	if err := m.Arm(arm("c-drops", 100, time.Now().Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	want := "dtrace reported 1,236 drops, 1 probe error"
	deadline := time.Now().Add(10 * time.Second)
	for {
		m.mu.Lock()
		a := m.captures["c-drops"]
		note := dtraceNote(a)
		m.mu.Unlock()
		if note == want && rec.events() == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("note %q with %d events; want %q and 1", note, rec.events(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, detail := rec.lastState("c-drops"); !strings.HasPrefix(detail, "dtrace reported ") {
		t.Fatalf("the target's detail %q does not show the drops", detail)
	}
	if d, e := testutil.ToFloat64(m.dtraceDrops), testutil.ToFloat64(m.dtraceErrors); d != 1236 || e != 1 {
		t.Fatalf("metrics: %v drops, %v errors; want 1236 and 1", d, e)
	}
	m.Disarm("c-drops", "cancelled")
	if d := waitState(t, rec, "c-drops", livedumpv1.TargetState_TARGET_STATE_CANCELLED); !strings.Contains(d, want) {
		t.Fatalf("final detail %q does not keep the counts", d)
	}
}

// TestBuiltinDTraceGetsItsParameters: the built-in dtrace is given the
// symbol path with -y (and _NT_SYMBOL_PATH); the MSI build only the
// environment variable.
func TestBuiltinDTraceGetsItsParameters(t *testing.T) {
	const sp = `srv*C:\symbols*https://msdl.microsoft.com/download/symbols`
	for _, kind := range []host.DTraceKind{host.DTraceBuiltin, host.DTraceMSI} {
		d := host.DTrace{Kind: kind, Path: "x"}
		argv, env := d.Invocation(sp, []string{"-q", "-s", "c.d"})
		wantArgs := "-q -s c.d"
		if kind == host.DTraceBuiltin {
			wantArgs = "-y " + sp + " " + wantArgs
		}
		if strings.Join(argv, " ") != wantArgs || len(env) != 1 || env[0] != "_NT_SYMBOL_PATH="+sp {
			t.Errorf("%s: args %q env %q", kind, argv, env)
		}
	}
}
