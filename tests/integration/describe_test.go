package integration

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/agent"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/harness"
)

// TestDescribeAgentFetchesItsOwnLog: agents describe shows what the
// controller knows (inventory, certificate, the captures the agent took
// part in) and the tail of the agent's own log file, fetched from the real
// agent over its stream; an agent without a log file says so.
func TestDescribeAgentFetchesItsOwnLog(t *testing.T) {
	c := startController(t, controllerOpts{})
	logDir := t.TempDir()
	logFile := filepath.Join(logDir, "livedump-agent.log")
	f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	withLog := harness.StartAgent(t, c.Controller, harness.AgentOpts{
		Token: c.token(t, 1, map[string]string{"site": "lab"}), Hostname: "LAB-VDI-01",
		Edit: func(cfg *agent.Config) {
			cfg.LogFile = logFile
			cfg.Logger = slog.New(slog.NewMultiHandler(cfg.Logger.Handler(), slog.NewTextHandler(f, nil)))
		},
	})
	noLog := harness.StartAgent(t, c.Controller, harness.AgentOpts{Token: c.token(t, 1, map[string]string{"site": "lab"}), Hostname: "LAB-KIOSK-03"})
	op := fleetClient(t, c, pki.RoleOperator)
	eventually(t, 20*time.Second, "both agents online", func() bool { return countOnline(listAgents(t, op, "site=lab")) == 2 })

	ctx := context.Background()
	capResp, err := op.CreateCapture(ctx, &livedumpv1.CreateCaptureRequest{Spec: &livedumpv1.CaptureSpec{
		Selector: "hostname=LAB-VDI-01", Processes: []string{"ms-teams.exe"}, Statuses: []string{"STATUS_INVALID_PARAMETER"},
		Action: livedumpv1.CaptureAction_CAPTURE_ACTION_STACKS, Expire: durationpb.New(10 * time.Minute),
	}, Force: true}) // the machine is not provisioned: the capture only has to name it
	if err != nil {
		t.Fatal(err)
	}

	resp, err := op.DescribeAgent(ctx, &livedumpv1.DescribeAgentRequest{AgentId: withLog.ID(), LogLines: 20})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetAgent().GetHostname() != "LAB-VDI-01" || resp.GetCertificate().GetSerial() == "" || resp.GetCertificate().GetNotAfter() == nil {
		t.Errorf("agent or certificate missing: %v %v", resp.GetAgent(), resp.GetCertificate())
	}
	if len(resp.GetCaptures()) != 1 || resp.GetCaptures()[0].GetCaptureId() != capResp.GetCapture().GetId() || resp.GetCaptures()[0].GetTarget().GetAgentId() != withLog.ID() {
		t.Errorf("captures = %v, want the one capture", resp.GetCaptures())
	}
	rep := resp.GetLog().GetReport()
	if resp.GetLog().GetError() != "" || rep.GetFileName() != "livedump-agent.log" || len(rep.GetLines()) == 0 || len(rep.GetLines()) > 20 {
		t.Fatalf("log = %v", resp.GetLog())
	}
	if !strings.Contains(strings.Join(rep.GetLines(), "\n"), "connected") {
		t.Errorf("the agent's own log lacks its connect line:\n%s", strings.Join(rep.GetLines(), "\n"))
	}

	resp, err = op.DescribeAgent(ctx, &livedumpv1.DescribeAgentRequest{AgentId: noLog.ID(), LogLines: 20})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.GetLog().GetReport().GetNoLogFile() || len(resp.GetCaptures()) != 0 {
		t.Errorf("agent without a log file: log %v, captures %v", resp.GetLog(), resp.GetCaptures())
	}
}
