package security

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livedump/livedump/agent"
	"github.com/livedump/livedump/agent/capture"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/sim"
	"github.com/livedump/livedump/tests/harness"
)

// rawScriptRefused is the refusal an agent with allow_raw_scripts off
// sends back for a capture that carries its own D script.
const rawScriptRefused = "capture.script: raw D scripts are not allowed on this machine (agent setting allow_raw_scripts is off)"

// hostileScript is what a hostile controller would run as SYSTEM: any D,
// destructive actions included. The simulated dtrace only needs it to
// compile and keep running, so that a running dtrace shows it was armed.
const hostileScript = "#pragma D option destructive\n" +
	"/* a hostile controller's D: lkd(), system(), copyout(), raise() ... as SYSTEM */\n" +
	"BEGIN { printf(\"owned\\n\"); }\n"

// rawArm is an ArmCapture directive carrying hostileScript.
func rawArm(directiveID, captureID string) *livedumpv1.Directive {
	return &livedumpv1.Directive{Id: directiveID, Kind: &livedumpv1.Directive_Arm{Arm: &livedumpv1.ArmCapture{
		CaptureId: captureID, Script: hostileScript, Action: livedumpv1.CaptureAction_CAPTURE_ACTION_STACKS,
	}}}
}

// TestAttacker5_RawScriptRefusedByDefault: a controller the agent trusts
// (compromised, or impersonated with the CA's key) arms a capture that
// carries its own D script. An agent with default settings refuses it,
// naming the local setting, starts no dtrace, writes nothing for it and
// counts the refusal; an agent whose administrator set allow_raw_scripts
// runs it; and a raw-script capture armed while the setting was on does
// not resume once it is off.
func TestAttacker5_RawScriptRefusedByDefault(t *testing.T) {
	c := harness.StartController(t, nil) // only its CA: the agent trusts it

	t.Run("default settings", func(t *testing.T) {
		evil := startHostileController(t, c)
		reg := prometheus.NewRegistry()
		a := startVictim(t, c, evil, "", func(cfg *agent.Config) { cfg.Metrics = reg })
		const id = "c-raw-default"
		evil.send <- rawArm("arm-"+id, id)
		ack := evil.ack(t, "arm-"+id)
		if ack.GetError() != rawScriptRefused {
			t.Errorf("ack error %q, want %q", ack.GetError(), rawScriptRefused)
		}
		// Give a dtrace the agent may have started time to show up.
		time.Sleep(time.Second)
		assertNotRun(t, evil, a, id)
		if n := refusedRaw(t, reg); n != 1 {
			t.Errorf("livedump_agent_directives_refused_total{reason=\"raw_script\"} = %v, want 1", n)
		}
	})

	dir := t.TempDir() // outlives the subtest: the third one restarts this agent
	t.Run("allow_raw_scripts on", func(t *testing.T) {
		evil := startHostileController(t, c)
		a := startVictim(t, c, evil, dir, func(cfg *agent.Config) { cfg.AllowRawScripts = true })
		const id = "c-raw-allowed"
		evil.send <- rawArm("arm-"+id, id)
		if e := evil.ack(t, "arm-"+id).GetError(); e != "" {
			t.Fatalf("an agent with allow_raw_scripts on refused the script: %s", e)
		}
		harness.Eventually(t, 10*time.Second, "dtrace running the raw script", func() bool { return dtraceRunning(id) })
		harness.Eventually(t, 10*time.Second, "the capture reported armed", func() bool {
			s := evil.status(id)
			return s != nil && s.GetState() == livedumpv1.TargetState_TARGET_STATE_ARMED
		})
		if err := a.Stop(); err != nil {
			t.Fatal(err)
		}
		harness.Eventually(t, 10*time.Second, "dtrace stopped with the agent", func() bool { return !dtraceRunning(id) })
	})

	t.Run("armed while allowed, setting turned off", func(t *testing.T) {
		const id = "c-raw-allowed"
		if _, err := os.Stat(filepath.Join(dir, capture.StateFile)); err != nil {
			t.Fatalf("no persisted captures to resume: %v", err)
		}
		evil := startHostileController(t, c)
		reg := prometheus.NewRegistry()
		startVictim(t, c, evil, dir, func(cfg *agent.Config) { cfg.Metrics = reg })
		harness.Eventually(t, 10*time.Second, "a status for the persisted capture", func() bool { return evil.status(id) != nil })
		time.Sleep(time.Second) // a resumed dtrace has had time to start
		if dtraceRunning(id) {
			t.Error("the agent resumed a raw script with allow_raw_scripts off")
		}
		if s := evil.status(id); s.GetState() != livedumpv1.TargetState_TARGET_STATE_FAILED || !strings.Contains(s.GetDetail(), rawScriptRefused) {
			t.Errorf("capture reported %v %q, want failed: %s", s.GetState(), s.GetDetail(), rawScriptRefused)
		}
		if n := refusedRaw(t, reg); n != 1 {
			t.Errorf("livedump_agent_directives_refused_total{reason=\"raw_script\"} = %v, want 1", n)
		}
	})
}

// refusedRaw is the agent's count of raw scripts refused.
func refusedRaw(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	return counterValue(t, reg, "livedump_agent_directives_refused_total", map[string]string{"reason": "raw_script"})
}

// startVictim runs a real agent on a provisioned simulated machine (DTrace
// installed, its driver loaded: a script it accepts really runs) that
// trusts c's CA and connects to evil. dir is its state directory ("" for
// a new one); the machine is provisioned on first use.
func startVictim(t *testing.T, c *harness.Controller, evil *hostileController, dir string, edit func(*agent.Config)) *harness.Agent {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	if _, err := os.Stat(filepath.Join(dir, "host")); errors.Is(err, fs.ErrNotExist) {
		provisionSimHost(t, filepath.Join(dir, "host"))
	}
	a := harness.StartAgent(t, c, harness.AgentOpts{StateDir: dir, Token: "ldt_any", Hostname: "VICTIM-01", Edit: func(cfg *agent.Config) {
		cfg.Controllers = []string{evil.addr}
		if edit != nil {
			edit(cfg)
		}
	}})
	harness.Eventually(t, 10*time.Second, "the agent connected to the hostile controller", func() bool {
		return a.ID() == hostileAgentID && evil.connected()
	})
	return a
}

// provisionSimHost makes the simulated machine in dir ready for DTrace, as
// `livedumpctl provision apply` and a reboot would: the signed DTrace
// package installed, the boot flag set, rebooted.
func provisionSimHost(t *testing.T, dir string) {
	t.Helper()
	h, err := sim.New(sim.Config{StateDir: dir, Hostname: "VICTIM-01"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := sim.BuildSignedMSI(sim.MSIManifest{
		Product: "DTrace", Version: "2.0.0",
		Files: map[string]string{`C:\Program Files\DTrace\dtrace.exe`: "simulated dtrace.exe\n"},
	}, sim.DTraceSigner)
	if err != nil {
		t.Fatal(err)
	}
	msi := filepath.Join(t.TempDir(), "DTrace.msi")
	if err := os.WriteFile(msi, b, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if code, err := h.InstallMSI(ctx, msi, filepath.Join(t.TempDir(), "msi.log")); err != nil || code != 0 {
		t.Fatalf("install the simulated DTrace: exit %d, %v", code, err)
	}
	if err := h.SetBCDDtrace(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := h.Boot(); err != nil {
		t.Fatal(err)
	}
	if !h.DtraceDriverLoaded() {
		t.Fatal("the simulated machine's DTrace driver is not loaded after provisioning")
	}
}

// assertNotRun checks that capture id left no trace on the agent: no
// dtrace running it, no file named after it and no record of it in the
// persisted captures, and no status reported for it.
func assertNotRun(t *testing.T, evil *hostileController, a *harness.Agent, id string) {
	t.Helper()
	if dtraceRunning(id) {
		t.Errorf("a dtrace process runs the hostile script of %s", id)
	}
	err := filepath.WalkDir(a.StateDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if strings.Contains(d.Name(), id) {
			t.Errorf("the agent wrote %s", path)
		}
		if !d.IsDir() && d.Name() == capture.StateFile {
			if b, _ := os.ReadFile(path); strings.Contains(string(b), id) {
				t.Errorf("%s records capture %s:\n%s", path, id, b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if s := evil.status(id); s != nil {
		t.Errorf("the agent reported capture %s %v %q: it was taken on", id, s.GetState(), s.GetDetail())
	}
}

// dtraceRunning reports whether any process runs the capture's script (the
// agent writes it to scripts/<id>.d and passes that path to dtrace).
func dtraceRunning(captureID string) bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), captureID+".d") {
			return true
		}
	}
	return false
}
