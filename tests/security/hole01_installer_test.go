package security

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/livedump/livedump/agent"
	"github.com/livedump/livedump/agent/provision"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/sim"
	"github.com/livedump/livedump/tests/harness"
)

// dtraceExe is where the (simulated) DTrace MSI installs dtrace.exe.
const dtraceExe = `C:\Program Files\DTrace\dtrace.exe`

// evilMSI is a simulated package an attacker wants to run as SYSTEM: it
// installs what looks like DTrace, unsigned.
func evilMSI(t *testing.T) []byte {
	t.Helper()
	b, err := sim.BuildMSI(sim.MSIManifest{Product: "DTrace", Version: "2.0.0",
		Files: map[string]string{dtraceExe: "attacker's payload"}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// uploadArtifact streams data to UploadArtifact as fc's caller.
func uploadArtifact(t *testing.T, fc livedumpv1.FleetServiceClient, name string, data []byte) (*livedumpv1.UploadArtifactResponse, error) {
	t.Helper()
	st, err := fc.UploadArtifact(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// A refused stream fails Send with EOF; CloseAndRecv has the reason.
	if err := st.Send(&livedumpv1.UploadArtifactRequest{Msg: &livedumpv1.UploadArtifactRequest_Header{
		Header: &livedumpv1.Artifact{Name: name, Size: int64(len(data)), Sha256: sha(data)}}}); err != nil {
		return st.CloseAndRecv()
	}
	for len(data) > 0 {
		n := min(len(data), 4096)
		if err := st.Send(&livedumpv1.UploadArtifactRequest{Msg: &livedumpv1.UploadArtifactRequest_Chunk{Chunk: data[:n]}}); err != nil {
			break
		}
		data = data[n:]
	}
	return st.CloseAndRecv()
}

// TestHole01_OperatorCannotUploadInstaller: an operator who is not an
// admin uploads an MSI of his choosing. Refused, audited, nothing stored,
// and the fleet's DTrace MSI is unchanged.
func TestHole01_OperatorCannotUploadInstaller(t *testing.T) {
	c := harness.StartController(t, nil)
	ctx := context.Background()
	msi := evilMSI(t)
	_, err := uploadArtifact(t, c.Fleet(t, pki.RoleOperator), "DTrace.amd64.msi", msi)
	harness.WantCode(t, err, codes.PermissionDenied, "needs admin")

	if _, err := c.Store().GetArtifact(ctx, sha(msi)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused upload is in the artifact store: %v", err)
	}
	if a, err := c.Store().LatestArtifact(ctx, store.ArtifactDTraceMSI); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the fleet's DTrace MSI changed: %+v, %v", a, err)
	}
	if !auditHas(t, c, "operator", "FleetService/UploadArtifact", "permissiondenied") {
		t.Fatal("the refused upload is not in the audit log")
	}
}

// TestHole01_OperatorCannotChooseInstaller: an operator picks an uploaded
// MSI (here one an admin uploaded for inspection) as the fleet's DTrace
// installer. Refused with the field named, audited, and the fleet's DTrace
// MSI is unchanged.
func TestHole01_OperatorCannotChooseInstaller(t *testing.T) {
	c := harness.StartController(t, nil)
	ctx := context.Background()
	msi := evilMSI(t)
	if _, err := uploadArtifact(t, c.Fleet(t, pki.RoleAdmin), "DTrace.amd64.msi", msi); err != nil {
		t.Fatal(err)
	}
	_, err := c.Fleet(t, pki.RoleOperator).ApplyProvision(ctx, &livedumpv1.ApplyProvisionRequest{
		Selector: "role=vdi", DtraceMsiSha256: sha(msi),
	})
	harness.WantCode(t, err, codes.PermissionDenied, "dtrace_msi_sha256")
	if a, err := c.Store().LatestArtifact(ctx, store.ArtifactDTraceMSI); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the fleet's DTrace MSI changed: %+v, %v", a, err)
	}
	if !auditHas(t, c, "operator", "FleetService/ApplyProvision", "dtrace_msi_sha256") {
		t.Fatal("the refused apply is not in the audit log")
	}
}

// startLabAgent runs one agent on a simulated Windows 11 machine and waits
// until it is online.
func startLabAgent(t *testing.T, c *harness.Controller, host string, edit func(*agent.Config)) *harness.Agent {
	t.Helper()
	a := harness.StartAgent(t, c, harness.AgentOpts{Token: c.Token(t, 1, map[string]string{"role": "vdi"}), Hostname: host, Edit: edit})
	admin := c.Fleet(t, pki.RoleAdmin)
	harness.Eventually(t, 10*time.Second, "the agent online", func() bool {
		resp, err := admin.ListAgents(context.Background(), &livedumpv1.ListAgentsRequest{Selector: "hostname=" + host})
		return err == nil && len(resp.GetAgents()) == 1 && resp.GetAgents()[0].GetState() == livedumpv1.AgentState_AGENT_STATE_ONLINE
	})
	return a
}

// applyMSI uploads msi as an admin and applies provisioning with it to
// host; it returns the agent's report.
func applyMSI(t *testing.T, c *harness.Controller, host string, msi []byte) *livedumpv1.ProvisionReport {
	t.Helper()
	admin := c.Fleet(t, pki.RoleAdmin)
	up, err := uploadArtifact(t, admin, "DTrace.amd64.msi", msi)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := admin.ApplyProvision(context.Background(), &livedumpv1.ApplyProvisionRequest{
		Selector: "hostname=" + host, DtraceMsiSha256: up.GetArtifact().GetSha256(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResults()) != 1 {
		t.Fatalf("apply reached %d agents, want 1", len(resp.GetResults()))
	}
	if e := resp.GetResults()[0].GetError(); e != "" {
		t.Fatalf("apply: %s", e)
	}
	return resp.GetResults()[0].GetReport()
}

// recordedDetail is the provisioning state and detail the controller holds
// for host.
func recordedDetail(t *testing.T, c *harness.Controller, host string) (livedumpv1.ProvisionState, string) {
	t.Helper()
	resp, err := c.Fleet(t, pki.RoleAdmin).ListAgents(context.Background(), &livedumpv1.ListAgentsRequest{Selector: "hostname=" + host})
	if err != nil || len(resp.GetAgents()) != 1 {
		t.Fatalf("list %s: %v", host, err)
	}
	return resp.GetAgents()[0].GetProvisionState(), resp.GetAgents()[0].GetProvisionDetail()
}

// TestHole01_AgentRefusesUnsignedInstaller: a compromised controller (here:
// an admin certificate, which is what a compromised controller amounts to)
// pushes an unsigned MSI. The agent verifies it itself and never runs
// msiexec; the refusal reaches the controller and its audit log.
func TestHole01_AgentRefusesUnsignedInstaller(t *testing.T) {
	c := harness.StartController(t, nil)
	a := startLabAgent(t, c, "VDI-01", nil)
	rep := applyMSI(t, c, "VDI-01", evilMSI(t))
	wantRefused(t, c, a, "VDI-01", rep, "not signed")
}

func wantRefused(t *testing.T, c *harness.Controller, a *harness.Agent, host string, rep *livedumpv1.ProvisionReport, why string) {
	t.Helper()
	if rep.GetState() != livedumpv1.ProvisionState_PROVISION_STATE_FAILED || !strings.Contains(rep.GetDetail(), "installer refused") || !strings.Contains(rep.GetDetail(), why) {
		t.Fatalf("apply with a hostile MSI: %v %q, want failed: installer refused (%s)", rep.GetState(), rep.GetDetail(), why)
	}
	if ok, _ := a.Host.FileExists(dtraceExe); ok {
		t.Fatal("the hostile MSI was installed")
	}
	if n := a.Host.MsiexecRuns(); n != 0 {
		t.Fatalf("msiexec ran %d times on the agent", n)
	}
	harness.Eventually(t, 5*time.Second, "the refusal recorded by the controller", func() bool {
		st, d := recordedDetail(t, c, host)
		return st == livedumpv1.ProvisionState_PROVISION_STATE_FAILED && strings.Contains(d, "installer refused")
	})
	if !auditHas(t, c, "operator/", "FleetService/ApplyProvision", "ok") {
		t.Fatal("the apply is not in the audit log")
	}
}

// signedMSI is a simulated DTrace package signed by s.
func signedMSI(t *testing.T, s sim.MSISigner) []byte {
	t.Helper()
	b, err := sim.SignMSI(evilMSI(t), s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHole01_AgentRefusesWronglySignedInstaller: validly signed, but by a
// publisher the agent's local installer_publishers does not name; signed
// in the DTrace publisher's name by a certificate no trusted root vouches
// for; and a genuinely signed package altered after signing.
func TestHole01_AgentRefusesWronglySignedInstaller(t *testing.T) {
	c := harness.StartController(t, nil)
	genuine, err := sim.BuildSignedMSI(sim.MSIManifest{Product: "DTrace", Version: "2.0.0",
		Files: map[string]string{dtraceExe: "dtrace", `C:\Program Files\DTrace\drivers\dtrace.sys`: "the real driver"}}, sim.DTraceSigner)
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		name string
		msi  []byte
		why  string
	}{
		{"another publisher", signedMSI(t, sim.MSISigner{Publisher: "Totally Legit Software", Organization: "Totally Legit Software"}), `signed by "Totally Legit Software", not on installer_publishers`},
		{"self-signed in the DTrace publisher's name", signedMSI(t, sim.MSISigner{Publisher: "Microsoft Corporation", Untrusted: true}), "CERT_E_UNTRUSTEDROOT"},
		{"altered after signing", bytes.Replace(genuine, []byte("the real driver"), []byte("a rootkit driver"), 1), "TRUST_E_BAD_DIGEST"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := fmt.Sprintf("VDI-1%d", i)
			a := startLabAgent(t, c, host, nil)
			wantRefused(t, c, a, host, applyMSI(t, c, host, tc.msi), tc.why)
		})
	}
}

// TestHole01_AgentRefusesPrestagedInstaller: the agent's own pre-staged
// dtrace_msi is checked the same way (a file dropped on the machine is no
// more trusted than one from the controller).
func TestHole01_AgentRefusesPrestagedInstaller(t *testing.T) {
	c := harness.StartController(t, nil)
	pre := filepath.Join(t.TempDir(), "DTrace.amd64.msi")
	if err := os.WriteFile(pre, evilMSI(t), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startLabAgent(t, c, "VDI-20", func(cfg *agent.Config) { cfg.DTraceMSI = pre })
	resp, err := c.Fleet(t, pki.RoleOperator).ApplyProvision(context.Background(), &livedumpv1.ApplyProvisionRequest{Selector: "hostname=VDI-20"})
	if err != nil {
		t.Fatal(err)
	}
	wantRefused(t, c, a, "VDI-20", resp.GetResults()[0].GetReport(), "not signed")
}

// TestHole01_LocalSHA256AllowListIsHonoured: an installer that is not
// signed at all runs when the agent's own installer_sha256 (set at install
// time by the agent MSI's INSTALLER_SHA256) names it, and only then.
func TestHole01_LocalSHA256AllowListIsHonoured(t *testing.T) {
	c := harness.StartController(t, nil)
	msi := evilMSI(t) // unsigned; here it is the organization's own package
	a := startLabAgent(t, c, "VDI-30", func(cfg *agent.Config) {
		cfg.Installers = provision.InstallerPolicy{SHA256: []string{sha(msi)}}
	})
	rep := applyMSI(t, c, "VDI-30", msi)
	if rep.GetState() != livedumpv1.ProvisionState_PROVISION_STATE_REBOOT_REQUIRED {
		t.Fatalf("apply with an allow-listed MSI: %v %q", rep.GetState(), rep.GetDetail())
	}
	if ok, _ := a.Host.FileExists(dtraceExe); !ok || a.Host.MsiexecRuns() != 1 {
		t.Fatalf("the allow-listed MSI was not installed (dtrace.exe %v, %d msiexec runs)", ok, a.Host.MsiexecRuns())
	}
}
