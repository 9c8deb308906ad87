package integration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/internal/pki"
	"github.com/livedump/livedump/internal/profile"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/sim"
)

func simMSI(t *testing.T) []byte {
	t.Helper()
	b, err := sim.BuildSignedMSI(sim.MSIManifest{Product: "DTrace", Version: "2.0.0",
		Files: map[string]string{`C:\Program Files\DTrace\dtrace.exe`: "dtrace"}}, sim.DTraceSigner)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fastProfile is the default profile with a one-second reboot warning, so
// tests see simulated reboots complete quickly.
func fastProfile() *profile.Profile {
	p := profile.Default()
	p.RebootDelay = time.Second
	return &p
}

func upload(t *testing.T, fc livedumpv1.FleetServiceClient, name string, data []byte, sum string) (*livedumpv1.UploadArtifactResponse, error) {
	t.Helper()
	st, err := fc.UploadArtifact(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// A refused stream fails Send with EOF; CloseAndRecv then has the reason.
	if err := st.Send(&livedumpv1.UploadArtifactRequest{Msg: &livedumpv1.UploadArtifactRequest_Header{Header: &livedumpv1.Artifact{Name: name, Size: int64(len(data)), Sha256: sum}}}); err != nil {
		return st.CloseAndRecv()
	}
	for len(data) > 0 {
		n := min(len(data), 1000)
		if err := st.Send(&livedumpv1.UploadArtifactRequest{Msg: &livedumpv1.UploadArtifactRequest_Chunk{Chunk: data[:n]}}); err != nil {
			break
		}
		data = data[n:]
	}
	return st.CloseAndRecv()
}

func provisionState(t *testing.T, fc livedumpv1.FleetServiceClient, sel string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, a := range listAgents(t, fc, sel) {
		m[a.GetHostname()] = a.GetProvisionState().String()
		if d := a.GetProvisionDetail(); d != "" {
			m[a.GetHostname()] += ": " + d
		}
	}
	return m
}

func allIn(m map[string]string, state string) bool {
	for _, s := range m {
		if !strings.HasPrefix(s, state) {
			return false
		}
	}
	return len(m) > 0
}

func TestProvisionPlanApplyRevert(t *testing.T) {
	c := startController(t, controllerOpts{profile: fastProfile()})
	tok := c.token(t, 3, map[string]string{"site": "lab"})
	var agents []*testAgent
	for i, role := range []string{"vdi", "vdi", "kiosk"} {
		agents = append(agents, startAgent(t, c, agentOpts{token: tok, labels: map[string]string{"role": role}, hostname: "LAB-" + strings.ToUpper(role) + "-0" + string(rune('1'+i))}))
	}
	op := fleetClient(t, c, pki.RoleOperator)
	eventually(t, 15*time.Second, "3 agents online and reporting", func() bool {
		st := provisionState(t, op, "")
		return len(st) == 3 && allIn(st, "PROVISION_STATE_NOT_PROVISIONED") && countOnline(listAgents(t, op, "")) == 3
	})
	before := map[string][]byte{}
	for _, a := range agents[:2] {
		b, err := os.ReadFile(a.host.StatePath())
		if err != nil {
			t.Fatal(err)
		}
		before[a.stateDir] = b
	}
	ctx := context.Background()

	// Plan: every step, current and desired, for the two VDI machines only.
	plan, err := op.PlanProvision(ctx, &livedumpv1.PlanProvisionRequest{Selector: "role=vdi"})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.GetResults()) != 2 {
		t.Fatalf("plan covers %d agents, want 2", len(plan.GetResults()))
	}
	for _, r := range plan.GetResults() {
		rep := r.GetReport()
		if rep.GetState() != livedumpv1.ProvisionState_PROVISION_STATE_BLOCKED || !strings.Contains(rep.GetDetail(), "no DTrace MSI") {
			t.Fatalf("plan without an MSI: %v %q (error %q)", rep.GetState(), rep.GetDetail(), r.GetError())
		}
		if len(rep.GetSteps()) != 8 || rep.GetSteps()[0].GetCurrent() != "(not set)" || rep.GetSteps()[0].GetDesired() == "" {
			t.Fatalf("plan steps: %v", rep.GetSteps())
		}
	}

	// An admin hands over the MSI once (choosing the installer agents run
	// as SYSTEM needs admin); agents fetch it over mTLS.
	admin := fleetClient(t, c, pki.RoleAdmin)
	msi := simMSI(t)
	sum := sha256.Sum256(msi)
	up, err := upload(t, admin, "DTrace.amd64.msi", msi, hex.EncodeToString(sum[:]))
	if err != nil {
		t.Fatal(err)
	}
	apply, err := admin.ApplyProvision(ctx, &livedumpv1.ApplyProvisionRequest{
		Selector: "role=vdi", Reboot: livedumpv1.RebootPolicy_REBOOT_POLICY_IF_NEEDED, DtraceMsiSha256: up.GetArtifact().GetSha256(),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range apply.GetResults() {
		if r.GetReport().GetState() != livedumpv1.ProvisionState_PROVISION_STATE_REBOOTING {
			t.Fatalf("%s after apply: %v %q %s", r.GetHostname(), r.GetReport().GetState(), r.GetReport().GetDetail(), r.GetError())
		}
	}
	eventually(t, 20*time.Second, "both VDI machines rebooted and ready", func() bool {
		return allIn(provisionState(t, op, "role=vdi"), "PROVISION_STATE_READY")
	})
	if s := provisionState(t, op, "role=kiosk")["LAB-KIOSK-03"]; s != "PROVISION_STATE_NOT_PROVISIONED" {
		t.Fatalf("the kiosk, outside the selector, is %s", s)
	}
	for _, a := range agents[:2] {
		if !a.host.DtraceDriverLoaded() {
			t.Fatal("dtrace boot flag not effective after the simulated reboot")
		}
		if ok, _ := a.host.FileExists(`C:\Program Files\DTrace\dtrace.exe`); !ok {
			t.Fatal("DTrace not installed from the uploaded MSI")
		}
	}

	// Revert: every value back, and the next plan shows all steps again.
	rev, err := op.RevertProvision(ctx, &livedumpv1.RevertProvisionRequest{Selector: "role=vdi", Reboot: livedumpv1.RebootPolicy_REBOOT_POLICY_IF_NEEDED})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rev.GetResults() {
		if r.GetError() != "" || len(r.GetReport().GetSteps()) != 8 {
			t.Fatalf("%s revert: %s %v", r.GetHostname(), r.GetError(), r.GetReport())
		}
	}
	eventually(t, 20*time.Second, "reverted machines rebooted", func() bool {
		for _, a := range agents[:2] {
			if a.host.DtraceDriverLoaded() {
				return false
			}
		}
		return allIn(provisionState(t, op, "role=vdi"), "PROVISION_STATE_NOT_PROVISIONED")
	})
	plan, err = op.PlanProvision(ctx, &livedumpv1.PlanProvisionRequest{Selector: "role=vdi"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range plan.GetResults() {
		for _, s := range r.GetReport().GetSteps() {
			if !s.GetChange() {
				t.Fatalf("%s: step %s shows no change after revert", r.GetHostname(), s.GetId())
			}
		}
	}
	for _, a := range agents[:2] {
		after, err := os.ReadFile(a.host.StatePath())
		if err != nil {
			t.Fatal(err)
		}
		if registryOf(t, after) != registryOf(t, before[a.stateDir]) {
			t.Fatalf("registry of %s differs after revert", a.stateDir)
		}
	}
}

// registryOf extracts the registry part of a simulated machine's state.
func registryOf(t *testing.T, state []byte) string {
	t.Helper()
	s := string(state)
	i := strings.Index(s, `"keys"`)
	if i < 0 {
		t.Fatal("no registry in the state file")
	}
	return s[i:]
}

func TestProvisionBitLockerBlocks(t *testing.T) {
	msi := filepath.Join(t.TempDir(), "DTrace.msi")
	if err := os.WriteFile(msi, simMSI(t), 0o600); err != nil {
		t.Fatal(err)
	}
	c := startController(t, controllerOpts{profile: fastProfile(), dtraceMSI: msi})
	a := startAgent(t, c, agentOpts{token: c.token(t, 1, nil), hostname: "LAPTOP-01", bitLocker: true})
	op := fleetClient(t, c, pki.RoleOperator)
	eventually(t, 10*time.Second, "agent online", func() bool { return countOnline(listAgents(t, op, "")) == 1 })
	before, _ := os.ReadFile(a.host.StatePath())

	resp, err := op.ApplyProvision(context.Background(), &livedumpv1.ApplyProvisionRequest{Selector: "hostname=LAPTOP-01", Reboot: livedumpv1.RebootPolicy_REBOOT_POLICY_IF_NEEDED})
	if err != nil {
		t.Fatal(err)
	}
	rep := resp.GetResults()[0].GetReport()
	if rep.GetState() != livedumpv1.ProvisionState_PROVISION_STATE_BLOCKED || !strings.HasPrefix(rep.GetDetail(), "BitLocker") {
		t.Fatalf("apply on a BitLocker machine: %v %q", rep.GetState(), rep.GetDetail())
	}
	after, _ := os.ReadFile(a.host.StatePath())
	if string(before) != string(after) {
		t.Fatal("apply changed a blocked machine")
	}
	got := provisionState(t, op, "")["LAPTOP-01"]
	if !strings.HasPrefix(got, "PROVISION_STATE_BLOCKED: BitLocker") {
		t.Fatalf("agents list shows %q", got)
	}
}

func TestProvisionOfflineAndBadInput(t *testing.T) {
	c := startController(t, controllerOpts{profile: fastProfile()})
	a := startAgent(t, c, agentOpts{token: c.token(t, 1, nil), hostname: "GONE-01"})
	op := fleetClient(t, c, pki.RoleOperator)
	eventually(t, 10*time.Second, "agent online", func() bool { return countOnline(listAgents(t, op, "")) == 1 })
	a.stop()
	eventually(t, 10*time.Second, "agent offline", func() bool { return countOnline(listAgents(t, op, "")) == 0 })
	ctx := context.Background()

	resp, err := op.ApplyProvision(ctx, &livedumpv1.ApplyProvisionRequest{Selector: "hostname=GONE-01"})
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.GetResults(); len(r) != 1 || !strings.HasPrefix(r[0].GetError(), "offline") || r[0].GetReport() != nil {
		t.Fatalf("apply on an offline agent: %v", r)
	}

	viewer := fleetClient(t, c, pki.RoleViewer)
	_, err = viewer.PlanProvision(ctx, &livedumpv1.PlanProvisionRequest{Selector: "x=y"})
	wantCode(t, err, codes.PermissionDenied, "role viewer")
	_, err = viewer.ApplyProvision(ctx, &livedumpv1.ApplyProvisionRequest{Selector: "x=y"})
	wantCode(t, err, codes.PermissionDenied, "role viewer")
	_, err = upload(t, viewer, "x.msi", []byte("x"), "")
	wantCode(t, err, codes.PermissionDenied, "role viewer")
	_, err = upload(t, op, "x.msi", []byte("x"), "")
	wantCode(t, err, codes.PermissionDenied, "needs admin")
	_, err = op.ApplyProvision(ctx, &livedumpv1.ApplyProvisionRequest{Selector: "x=y", DtraceMsiSha256: strings.Repeat("ab", 32)})
	wantCode(t, err, codes.PermissionDenied, "dtrace_msi_sha256")
	admin := fleetClient(t, c, pki.RoleAdmin)

	for _, tc := range []struct {
		name  string
		call  func() error
		field string
	}{
		{"selector", func() error {
			_, err := op.ApplyProvision(ctx, &livedumpv1.ApplyProvisionRequest{Selector: "role in (vdi"})
			return err
		}, "selector"},
		{"plan selector", func() error {
			_, err := op.PlanProvision(ctx, &livedumpv1.PlanProvisionRequest{Selector: "role in (vdi"})
			return err
		}, "selector"},
		{"wait", func() error {
			_, err := op.PlanProvision(ctx, &livedumpv1.PlanProvisionRequest{Wait: durationpb.New(time.Hour)})
			return err
		}, "wait"},
		{"empty selector", func() error {
			_, err := op.RevertProvision(ctx, &livedumpv1.RevertProvisionRequest{})
			return err
		}, "selector"},
		{"reboot", func() error {
			_, err := op.ApplyProvision(ctx, &livedumpv1.ApplyProvisionRequest{Selector: "x=y", Reboot: 7})
			return err
		}, "reboot"},
		{"unknown msi", func() error {
			_, err := admin.ApplyProvision(ctx, &livedumpv1.ApplyProvisionRequest{Selector: "x=y", DtraceMsiSha256: strings.Repeat("ab", 32)})
			return err
		}, "dtrace_msi_sha256"},
		{"msi path injection", func() error {
			_, err := admin.ApplyProvision(ctx, &livedumpv1.ApplyProvisionRequest{Selector: "x=y", DtraceMsiSha256: "../../etc/passwd"})
			return err
		}, "dtrace_msi_sha256"},
		{"upload hash mismatch", func() error {
			_, err := upload(t, admin, "DTrace.msi", []byte("content"), strings.Repeat("0", 64))
			return err
		}, "header.sha256"},
		{"upload name", func() error {
			_, err := upload(t, admin, "..", []byte("content"), "")
			return err
		}, "header.name"},
		{"upload size", func() error {
			_, err := upload(t, admin, "a.msi", []byte{}, "")
			return err
		}, "header.size"},
	} {
		t.Run(tc.name, func(t *testing.T) { wantCode(t, tc.call(), codes.InvalidArgument, tc.field) })
	}

	audit, err := admin.ListAudit(ctx, &livedumpv1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var applies, uploads int
	for _, e := range audit.GetEntries() {
		switch e.GetAction() {
		case "FleetService/ApplyProvision":
			applies++
		case "FleetService/UploadArtifact":
			uploads++
		}
	}
	if applies < 5 || uploads < 4 {
		t.Fatalf("audit has %d applies and %d uploads, want every attempt", applies, uploads)
	}
}
