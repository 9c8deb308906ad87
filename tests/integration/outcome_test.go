package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/testca"
)

// TestCaptureEveryTargetFailedEndsFailed: a dump capture on a selector
// whose only machine cannot take it (provisioned, but with 1 GiB of disk
// free, less than a dump: the agent refuses to arm) ends failed, not done,
// saying why; its target counts show the failure; and `livedumpctl capture
// watch` exits 1, naming the machine by hostname on every line.
func TestCaptureEveryTargetFailedEndsFailed(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs livedumpctl")
	}
	cli := buildCLI(t)
	c := startController(t, controllerOpts{profile: fastProfile(), dtraceMSI: writeSimMSI(t)})
	startAgent(t, c, agentOpts{token: c.token(t, 1, nil), hostname: "FULL-01", labels: map[string]string{"role": "full"}, freeBytes: 1 << 30})
	op := fleetClient(t, c, pki.RoleOperator)
	eventually(t, 10*time.Second, "agent online", func() bool { return countOnline(listAgents(t, op, "role=full")) == 1 })
	if _, err := op.ApplyProvision(context.Background(), &livedumpv1.ApplyProvisionRequest{Selector: "role=full", Reboot: livedumpv1.RebootPolicy_REBOOT_POLICY_IF_NEEDED}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "machine provisioned", func() bool {
		return allIn(provisionState(t, op, "role=full"), "PROVISION_STATE_READY") && countOnline(listAgents(t, op, "role=full")) == 1
	})

	id := dumpCapture(t, op, &livedumpv1.CaptureSpec{Selector: "role=full", Processes: []string{"ms-teams.exe"},
		Statuses: []string{"STATUS_INVALID_PARAMETER"}, Action: livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP})
	// Watch from the start: the target's change reaches the watcher live.
	config := writeCLIConfig(t, c, pki.RoleViewer)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	watch := exec.CommandContext(ctx, cli, "--config", config, "capture", "watch", id)
	var stdout, stderr bytes.Buffer
	watch.Stdout, watch.Stderr = &stdout, &stderr
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}

	eventually(t, 20*time.Second, "capture ended", func() bool {
		return getCapture(t, op, id).GetState() != livedumpv1.CaptureState_CAPTURE_STATE_ACTIVE
	})
	cp := getCapture(t, op, id)
	if cp.GetState() != livedumpv1.CaptureState_CAPTURE_STATE_FAILED {
		t.Fatalf("capture %s: %s, want failed", cp.GetState(), cp.GetDetail())
	}
	if !strings.HasPrefix(cp.GetDetail(), "every target failed: ") || !strings.Contains(cp.GetDetail(), "1024 MiB free") {
		t.Errorf("detail %q: want every target failed and the machine's reason", cp.GetDetail())
	}
	if want := map[string]int64{"failed": 1}; !maps.Equal(cp.GetTargetCounts(), want) || cp.GetOfflineTargets() != 0 {
		t.Errorf("target_counts %v, offline %d: want %v, 0", cp.GetTargetCounts(), cp.GetOfflineTargets(), want)
	}

	err := watch.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("capture watch: %v, want exit status 1\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if want := fmt.Sprintf("livedumpctl: capture %s failed: every target failed: ", id); !strings.HasPrefix(stderr.String(), want) || strings.Count(stderr.String(), "\n") != 1 {
		t.Errorf("stderr %q, want one line starting %q", stderr.String(), want)
	}
	out := stdout.String()
	if !strings.Contains(out, "[FULL-01] failed ") || !strings.Contains(out, fmt.Sprintf("capture %s failed: every target failed", id)) {
		t.Errorf("watch output:\n%s", out)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(line, "[") && !strings.HasPrefix(line, "[FULL-01] ") {
			t.Errorf("a target line without the hostname: %q", line)
		}
	}

	t.Logf("capture watch (exit 1):\n%s%s", out, stderr.String())

	// capture list says so too.
	list, err := exec.Command(cli, "--config", config, "capture", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("capture list: %v\n%s", err, list)
	}
	var row []string
	for _, l := range strings.Split(string(list), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == id {
			row = f
		}
	}
	// ID STATE ACTION CREATED(2) EXPIRES(2) TARGETS ARMED TRIGGERED FAILED OFFLINE
	if len(row) < 12 || row[1] != "failed" || row[2] != "dump" || row[7] != "1" || row[10] != "1" {
		t.Errorf("capture list row %q:\n%s", row, list)
	}
}

// buildCLI builds livedumpctl from this tree into a test directory.
func buildCLI(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "livedumpctl")
	build := exec.Command(goTool, "build", "-o", bin, "./cmd/livedumpctl")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/livedumpctl: %v\n%s", err, out)
	}
	return bin
}

// writeCLIConfig writes a livedumpctl config for an operator certificate of
// role issued by c.
func writeCLIConfig(t *testing.T, c *testController, role pki.Role) string {
	t.Helper()
	dir := t.TempDir()
	cert := c.Issue(t, pki.OperatorIdentity(role, "cli"))
	if err := pki.WriteCerts(filepath.Join(dir, "operator.crt"), cert.Leaf); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKey(filepath.Join(dir, "operator.key"), testca.Key(cert)); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "livedumpctl.yaml")
	body := fmt.Sprintf("controller: %s\nca: %s\ncert: operator.crt\nkey: operator.key\ntimeout: 10s\n", c.Addr(), c.caFile)
	if err := os.WriteFile(config, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return config
}
