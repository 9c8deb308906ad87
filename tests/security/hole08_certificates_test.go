package security

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/agent"
	"github.com/livedump/livedump/controller"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/harness"
)

// renew renews r's certificate over its own connection and returns the new
// certificate, the way an agent (or a thief holding its key) does.
func renew(t *testing.T, c *harness.Controller, r *harness.RawAgent) *tls.Certificate {
	t.Helper()
	key, csr := harness.KeyCSR(t)
	resp, err := r.Client().Renew(context.Background(), &livedumpv1.RenewRequest{Csr: csr})
	if err != nil {
		t.Fatalf("renew: %v", err)
	}
	return harness.TLSCert(t, resp.GetCertificateChain(), key)
}

func mustCSR(t *testing.T) []byte {
	t.Helper()
	_, csr := harness.KeyCSR(t)
	return csr
}

// oldCertCalls makes every kind of agent call with the given connection and
// returns their errors by name.
func oldCertCalls(t *testing.T, ac livedumpv1.AgentServiceClient, agentID string) map[string]error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	errs := map[string]error{}
	_, errs["Renew"] = ac.Renew(ctx, &livedumpv1.RenewRequest{Csr: mustCSR(t)})
	cs, err := ac.Connect(ctx)
	if err == nil {
		err = cs.Send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Hello{Hello: &livedumpv1.Hello{AgentId: agentID, Inventory: harness.Inventory("OLD")}}})
		// A server that refuses the stream before reading it makes Send
		// return io.EOF; the refusal's status comes from Recv (grpc-go's
		// ClientStream.SendMsg contract), so always read it.
		if err == nil || errors.Is(err, io.EOF) {
			_, err = cs.Recv()
		}
		cs.CloseSend()
	}
	errs["Connect"] = err
	up, err := ac.UploadDump(ctx)
	if err == nil {
		_, err = up.CloseAndRecv()
	}
	errs["UploadDump"] = err
	_, errs["DumpOffset"] = ac.DumpOffset(ctx, &livedumpv1.DumpOffsetRequest{DumpId: "0123456789abcdef"})
	return errs
}

// TestHole08_OldAgentCertificateRefusedAfterRenewal renews a stolen agent
// identity, then uses the replaced certificate after the grace window: every
// call, Renew included, is refused, and the store still names the new
// certificate as the agent's only one.
func TestHole08_OldAgentCertificateRefusedAfterRenewal(t *testing.T) {
	c := harness.StartController(t, func(cfg *controller.Config) { cfg.RenewGrace = time.Second })
	thief := c.EnrollRaw(t, "STOLEN-08", nil)
	oldSerial := pki.SerialHex(thief.Cert.Leaf)
	fresh := renew(t, c, thief)
	newSerial := pki.SerialHex(fresh.Leaf)
	time.Sleep(1500 * time.Millisecond) // past the grace window

	old := livedumpv1.NewAgentServiceClient(c.Dial(t, thief.Cert))
	for name, err := range oldCertCalls(t, old, thief.ID) {
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s with the replaced certificate %s: got %v, want PermissionDenied", name, oldSerial, err)
			continue
		}
		harness.WantCode(t, err, codes.PermissionDenied, "superseded")
	}
	a, err := c.Store().GetAgent(context.Background(), thief.ID)
	if err != nil {
		t.Fatal(err)
	}
	if a.CertSerial != newSerial {
		t.Fatalf("store names certificate %s, want the renewed %s (a Renew with the old one went through)", a.CertSerial, newSerial)
	}
	// The renewed certificate works.
	cur := livedumpv1.NewAgentServiceClient(c.Dial(t, fresh))
	if _, err := cur.DumpOffset(context.Background(), &livedumpv1.DumpOffsetRequest{DumpId: "0123456789abcdef"}); err != nil {
		t.Fatalf("call with the renewed certificate: %v", err)
	}
	// The refusals are audited with the serial that was refused.
	entries, err := c.Store().ListAudit(context.Background(), store.AuditFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range entries {
		if e.Action == "AgentService/Renew" && e.CertSerial == oldSerial && e.Outcome != "ok" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no refused Renew audited with serial %s: %+v", oldSerial, entries)
	}
}

// TestHole08_OldAgentCertificateAcceptedWithinGrace: within the grace window
// the replaced certificate still works (an upload under way finishes), but it
// may not renew again.
func TestHole08_OldAgentCertificateAcceptedWithinGrace(t *testing.T) {
	c := harness.StartController(t, func(cfg *controller.Config) { cfg.RenewGrace = time.Hour })
	thief := c.EnrollRaw(t, "STOLEN-09", nil)
	fresh := renew(t, c, thief)
	errs := oldCertCalls(t, livedumpv1.NewAgentServiceClient(c.Dial(t, thief.Cert)), thief.ID)
	if err := errs["DumpOffset"]; err != nil {
		t.Errorf("DumpOffset within the grace window: %v", err)
	}
	if err := errs["Connect"]; err != nil {
		t.Errorf("Connect within the grace window: %v", err)
	}
	harness.WantCode(t, errs["Renew"], codes.PermissionDenied, "only the current certificate may renew")
	a, err := c.Store().GetAgent(context.Background(), thief.ID)
	if err != nil {
		t.Fatal(err)
	}
	if a.CertSerial != pki.SerialHex(fresh.Leaf) {
		t.Fatalf("store names certificate %s, want the renewed %s", a.CertSerial, pki.SerialHex(fresh.Leaf))
	}
}

// operator dials as a freshly issued operator certificate.
func operator(t *testing.T, c *harness.Controller, role pki.Role, name string) (livedumpv1.FleetServiceClient, string) {
	t.Helper()
	cert := c.Issue(t, pki.OperatorIdentity(role, name))
	return livedumpv1.NewFleetServiceClient(c.Dial(t, cert)), pki.SerialHex(cert.Leaf)
}

// TestHole08_RevokedOperatorCertificateRefused: an admin revokes a stolen
// operator certificate by serial. Its next call is refused (and audited with
// its serial), its open WatchCapture stream ends at once, nothing it tries
// afterwards changes anything, and other operators are unaffected.
func TestHole08_RevokedOperatorCertificateRefused(t *testing.T) {
	c := harness.StartController(t, nil)
	target := c.EnrollRaw(t, "LAB-08", map[string]string{"site": "lab"})
	admin := c.Fleet(t, pki.RoleAdmin)
	stolen, stolenSerial := operator(t, c, pki.RoleOperator, "mallory")
	other, _ := operator(t, c, pki.RoleOperator, "oscar")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The thief is at work: a capture, and a watch on it (forced: the raw
	// agent reports no provisioning state).
	created, err := stolen.CreateCapture(ctx, &livedumpv1.CreateCaptureRequest{Spec: &livedumpv1.CaptureSpec{
		Selector: "site=lab", Processes: []string{"notepad.exe"}, Statuses: []string{"STATUS_ACCESS_DENIED"},
		Action: livedumpv1.CaptureAction_CAPTURE_ACTION_STACKS, Expire: durationpb.New(10 * time.Minute),
	}, Force: true})
	if err != nil {
		t.Fatalf("create capture: %v", err)
	}
	watch, err := stolen.WatchCapture(ctx, &livedumpv1.WatchCaptureRequest{Id: created.GetCapture().GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatalf("watch before revocation: %v", err)
	}

	// The admin finds the certificate in the list and revokes it.
	list, err := admin.ListOperatorCertificates(ctx, &livedumpv1.ListOperatorCertificatesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var seen *livedumpv1.OperatorCertificate
	for _, oc := range list.GetCertificates() {
		if oc.GetSerial() == stolenSerial {
			seen = oc
		}
	}
	if seen == nil || seen.GetName() != "mallory" || seen.GetRole() != "operator" || seen.GetFirstSeen() == nil {
		t.Fatalf("the stolen certificate %s is not listed as seen: %v", stolenSerial, list.GetCertificates())
	}
	if _, err := admin.RevokeOperatorCertificate(ctx, &livedumpv1.RevokeOperatorCertificateRequest{
		Target: &livedumpv1.RevokeOperatorCertificateRequest_Serial{Serial: strings.ToUpper(stolenSerial)},
	}); err != nil {
		t.Fatalf("revoke: %v", err)
	}

	// The open watch ends at once.
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := watch.Recv(); err != nil {
				ended <- err
				return
			}
		}
	}()
	select {
	case err := <-ended:
		harness.WantCode(t, err, codes.PermissionDenied, "revoked")
	case <-time.After(5 * time.Second):
		t.Fatal("WatchCapture of a revoked certificate still open 5s after revocation")
	}
	// Every next call is refused; a mutating one is audited with the serial.
	_, err = stolen.ListAgents(ctx, &livedumpv1.ListAgentsRequest{})
	harness.WantCode(t, err, codes.PermissionDenied, "revoked")
	_, err = stolen.LabelAgent(ctx, &livedumpv1.LabelAgentRequest{AgentId: target.ID, Set: map[string]string{"owned": "yes"}})
	harness.WantCode(t, err, codes.PermissionDenied, "revoked")
	_, err = stolen.CancelCapture(ctx, &livedumpv1.CancelCaptureRequest{Id: created.GetCapture().GetId()})
	harness.WantCode(t, err, codes.PermissionDenied, "revoked")

	// Nothing changed.
	a, err := c.Store().GetAgent(ctx, target.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Labels["owned"]; ok {
		t.Fatalf("a revoked certificate labelled agent %s: %v", target.ID, a.Labels)
	}
	capt, err := c.Store().GetCapture(ctx, created.GetCapture().GetId())
	if err != nil || capt.State != "active" {
		t.Fatalf("capture after the refused cancel: %+v (err %v)", capt, err)
	}
	entries, err := c.Store().ListAudit(ctx, store.AuditFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	audited := false
	for _, e := range entries {
		if e.Action == "FleetService/LabelAgent" && e.CertSerial == stolenSerial && strings.HasPrefix(e.Outcome, "permissiondenied") {
			audited = true
		}
	}
	if !audited {
		t.Fatalf("the refused LabelAgent of certificate %s is not audited with its serial: %+v", stolenSerial, entries)
	}
	// Another operator is unaffected.
	if _, err := other.ListAgents(ctx, &livedumpv1.ListAgentsRequest{}); err != nil {
		t.Fatalf("another operator refused after a revocation: %v", err)
	}
}

// TestHole08_OperatorRevokedByName: revoking an operator by name refuses
// every certificate of that name issued before, including one never used,
// in any role; a certificate issued afterwards works.
func TestHole08_OperatorRevokedByName(t *testing.T) {
	c := harness.StartController(t, nil)
	admin := c.Fleet(t, pki.RoleAdmin)
	used, usedSerial := operator(t, c, pki.RoleViewer, "eve")
	unused, _ := operator(t, c, pki.RoleAdmin, "eve") // a copy the thief kept, never used
	bystander, _ := operator(t, c, pki.RoleViewer, "evelyn")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := used.ListAgents(ctx, &livedumpv1.ListAgentsRequest{}); err != nil {
		t.Fatal(err)
	}
	resp, err := admin.RevokeOperatorCertificate(ctx, &livedumpv1.RevokeOperatorCertificateRequest{
		Target: &livedumpv1.RevokeOperatorCertificateRequest_Name{Name: "eve"},
	})
	if err != nil {
		t.Fatalf("revoke by name: %v", err)
	}
	if len(resp.GetCertificates()) != 1 || resp.GetCertificates()[0].GetSerial() != usedSerial {
		t.Errorf("revoke by name reported %v, want the one recorded certificate %s", resp.GetCertificates(), usedSerial)
	}
	_, err = used.ListAgents(ctx, &livedumpv1.ListAgentsRequest{})
	harness.WantCode(t, err, codes.PermissionDenied, "revoked")
	_, err = unused.CreateToken(ctx, &livedumpv1.CreateTokenRequest{})
	harness.WantCode(t, err, codes.PermissionDenied, "revoked")
	if ts, err := c.Store().ListTokens(ctx); err != nil || len(ts) != 0 {
		t.Fatalf("tokens after the refused CreateToken: %v (err %v)", ts, err)
	}
	if _, err := bystander.ListAgents(ctx, &livedumpv1.ListAgentsRequest{}); err != nil {
		t.Fatalf("an operator with a similar name refused: %v", err)
	}
	// Issue times have whole seconds: the cut-off is the next second.
	time.Sleep(time.Until(resp.GetRevokedAt().AsTime()) + 10*time.Millisecond)
	fresh, _ := operator(t, c, pki.RoleViewer, "eve")
	if _, err := fresh.ListAgents(ctx, &livedumpv1.ListAgentsRequest{}); err != nil {
		t.Fatalf("a certificate issued after the revocation is refused: %v", err)
	}
}

// TestHole08_OperatorCertificateAdminOnly: viewers and operators may not
// list or revoke operator certificates (an operator revoking the admin
// would lock everyone out); the attempt is refused, audited, and changes
// nothing.
func TestHole08_OperatorCertificateAdminOnly(t *testing.T) {
	c := harness.StartController(t, nil)
	admin := c.Fleet(t, pki.RoleAdmin)
	ctx := context.Background()
	if _, err := admin.ListAgents(ctx, &livedumpv1.ListAgentsRequest{}); err != nil {
		t.Fatal(err)
	}
	for _, role := range []pki.Role{pki.RoleViewer, pki.RoleOperator} {
		fc := c.Fleet(t, role)
		_, err := fc.ListOperatorCertificates(ctx, &livedumpv1.ListOperatorCertificatesRequest{})
		harness.WantCode(t, err, codes.PermissionDenied, "needs admin")
		_, err = fc.RevokeOperatorCertificate(ctx, &livedumpv1.RevokeOperatorCertificateRequest{
			Target: &livedumpv1.RevokeOperatorCertificateRequest_Name{Name: "test-admin"},
		})
		harness.WantCode(t, err, codes.PermissionDenied, "needs admin")
	}
	list, err := admin.ListOperatorCertificates(ctx, &livedumpv1.ListOperatorCertificatesRequest{})
	if err != nil {
		t.Fatalf("admin after the refused revocations: %v", err)
	}
	for _, oc := range list.GetCertificates() {
		if oc.GetRevokedAt() != nil {
			t.Fatalf("certificate revoked by a non-admin: %v", oc)
		}
	}
	entries, err := c.Store().ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	for _, e := range entries {
		if e.Action == "FleetService/RevokeOperatorCertificate" && strings.HasPrefix(e.Outcome, "permissiondenied") && e.CertSerial != "" {
			refused++
		}
	}
	if refused != 2 {
		t.Fatalf("%d refused RevokeOperatorCertificate calls audited with a serial, want 2", refused)
	}
}

// TestHole08_RenewedAgentMovesToItsNewCertificate: a real agent that renews
// moves its stream to a connection with the new certificate, so that when
// the (here one-second) grace window ends it stays online.
func TestHole08_RenewedAgentMovesToItsNewCertificate(t *testing.T) {
	c := harness.StartController(t, func(cfg *controller.Config) { cfg.RenewGrace = time.Second })
	clock := clockwork.NewFakeClockAt(time.Now())
	a := harness.StartAgent(t, c, harness.AgentOpts{Token: c.Token(t, 1, nil), Edit: func(cfg *agent.Config) { cfg.Clock = clock }})
	admin := c.Fleet(t, pki.RoleAdmin)
	online := func() bool {
		resp, err := admin.ListAgents(context.Background(), &livedumpv1.ListAgentsRequest{})
		return err == nil && len(resp.GetAgents()) == 1 && resp.GetAgents()[0].GetState() == livedumpv1.AgentState_AGENT_STATE_ONLINE
	}
	harness.Eventually(t, 10*time.Second, "agent online", online)
	first := a.Session().Identity().Leaf()
	clock.Advance(first.NotAfter.Sub(first.NotBefore))
	harness.Eventually(t, 10*time.Second, "certificate renewed", func() bool { return !a.Session().Identity().Leaf().Equal(first) })
	time.Sleep(2 * time.Second) // past the grace window
	harness.Eventually(t, 10*time.Second, "agent online on its renewed certificate", online)
	time.Sleep(500 * time.Millisecond)
	if !online() {
		t.Fatal("agent dropped after the grace window: it still used its replaced certificate")
	}
}
