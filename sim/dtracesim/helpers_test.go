package dtracesim

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/livedump/livedump/agent/host"
	"github.com/livedump/livedump/sim"
)

// Tests compare output with LF line endings on every OS; TestCRLF covers
// the Windows build's text-mode output.
func init() { crlf = false }

// machineOpts shapes the simulated machine a test runs dtrace on.
type machineOpts struct {
	noInstall  bool // DTrace MSI not installed
	noBCD      bool // bcdedit /set dtrace on never run
	noReboot   bool // ... run, but the machine not rebooted since
	hvci       bool // memory integrity turned on before the boot
	reportsDir string
}

// newMachine builds a simulated Windows machine as provisioning leaves it:
// DTrace installed from its MSI, the dtrace boot flag on, rebooted.
func newMachine(t *testing.T, o machineOpts) (string, *sim.Host) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	h, err := sim.New(sim.Config{StateDir: dir, Hostname: "SIM-DTRACE"})
	if err != nil {
		t.Fatal(err)
	}
	if !o.noInstall {
		pkg, err := sim.BuildMSI(sim.MSIManifest{
			Product: "DTrace",
			Version: "2.0.0",
			Files: map[string]string{
				dtraceExe: "simulated dtrace.exe",
				`C:\Program Files\DTrace\drivers\dtrace.sys`: "simulated driver",
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		tmp := t.TempDir()
		msi := filepath.Join(tmp, "DTrace-2.0.0.msi")
		if err := os.WriteFile(msi, pkg, 0o600); err != nil {
			t.Fatal(err)
		}
		if code, err := h.InstallMSI(ctx, msi, filepath.Join(tmp, "install.log")); err != nil || code != 0 {
			t.Fatalf("installing DTrace: %d, %v", code, err)
		}
	}
	if o.hvci {
		if err := h.SetValue(host.HVCIKey, host.HVCIValue, host.DWORD(1)); err != nil {
			t.Fatal(err)
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
	if o.reportsDir != "" {
		if err := h.SetValue(liveKernelReportsKey, liveKernelReportsVal, host.SZ(o.reportsDir)); err != nil {
			t.Fatal(err)
		}
	}
	return dir, h
}

// result is one run of the simulated dtrace.
type result struct {
	code           int
	stdout, stderr string
	st             *stats
}

// fastEnv makes runs quick: many firings per second, small instant dumps,
// a fixed seed.
func fastEnv(dir string) []string {
	return []string{
		EnvHost + "=" + dir,
		EnvRate + "=1000",
		EnvSeed + "=7",
		EnvDumpBytes + "=65536",
		EnvDumpSeconds + "=0",
	}
}

// writeScript puts a D script in a temporary file.
func writeScript(t *testing.T, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "capture.d")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runDTrace runs the simulated dtrace to completion (at most 30 s).
func runDTrace(t *testing.T, args, env []string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code, st := run(ctx, args, env, &out, &errb)
	if ctx.Err() != nil {
		t.Fatalf("dtrace %v did not finish; stdout:\n%s\nstderr:\n%s", args, out.String(), errb.String())
	}
	return result{code: code, stdout: out.String(), stderr: errb.String(), st: st}
}
