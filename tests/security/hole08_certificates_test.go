package security

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CreateCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := r.Client().Renew(context.Background(), &livedumpv1.RenewRequest{Csr: csr})
	if err != nil {
		t.Fatalf("renew: %v", err)
	}
	leaf, err := x509.ParseCertificate(resp.GetCertificateChain()[0])
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: resp.GetCertificateChain(), PrivateKey: key, Leaf: leaf}
}

func mustCSR(t *testing.T) []byte {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CreateCSR(key)
	if err != nil {
		t.Fatal(err)
	}
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
		if err == nil {
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
