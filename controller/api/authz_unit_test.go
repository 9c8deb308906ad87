package api

import (
	"context"
	"crypto/x509"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// TestAuthorizerDecisions runs calls through the unary interceptor with
// real client certificates: who may call what, and what a refusal says.
func TestAuthorizerDecisions(t *testing.T) {
	r := newRig(t, false)
	agentCert := r.addAgent(t, store.Agent{ID: "a1a1a1a1a1a1a1a1"})
	revokedCert := r.addAgent(t, store.Agent{ID: "b2b2b2b2b2b2b2b2", Revoked: true})
	strangerCert := r.cert(t, pki.AgentIdentity("c3c3c3c3c3c3c3c3")) // never enrolled
	staleCert := r.cert(t, pki.AgentIdentity("a1a1a1a1a1a1a1a1"))    // not the current one
	certs := map[string]*x509.Certificate{
		"none": nil, "agent": agentCert, "revoked agent": revokedCert, "unenrolled agent": strangerCert, "stale agent cert": staleCert,
		"viewer": r.cert(t, viewer), "operator": r.cert(t, operator), "admin": r.cert(t, admin),
	}
	for _, tc := range []struct {
		method, who string
		code        codes.Code
		msg         string // a part of the refusal
	}{
		{livedumpv1.FleetService_ListAgents_FullMethodName, "none", codes.Unauthenticated, "ListAgents requires an operator client certificate"},
		{livedumpv1.FleetService_ListAgents_FullMethodName, "agent", codes.PermissionDenied, "may only be called by operators"},
		{livedumpv1.FleetService_ListAgents_FullMethodName, "viewer", codes.OK, ""},
		{livedumpv1.FleetService_LabelAgent_FullMethodName, "viewer", codes.PermissionDenied, "role viewer may not call FleetService/LabelAgent (needs operator)"},
		{livedumpv1.FleetService_LabelAgent_FullMethodName, "operator", codes.OK, ""},
		{livedumpv1.FleetService_RevokeAgent_FullMethodName, "operator", codes.PermissionDenied, "role operator may not call FleetService/RevokeAgent (needs admin)"},
		{livedumpv1.FleetService_RevokeAgent_FullMethodName, "admin", codes.OK, ""},
		{livedumpv1.FleetService_GetDump_FullMethodName, "viewer", codes.PermissionDenied, "needs operator"},
		{livedumpv1.AgentService_Renew_FullMethodName, "operator", codes.PermissionDenied, "may only be called by agents"},
		{livedumpv1.AgentService_Renew_FullMethodName, "none", codes.Unauthenticated, "requires an agent client certificate"},
		{livedumpv1.AgentService_Renew_FullMethodName, "agent", codes.OK, ""},
		{livedumpv1.AgentService_Renew_FullMethodName, "revoked agent", codes.PermissionDenied, "is revoked"},
		{livedumpv1.AgentService_Renew_FullMethodName, "unenrolled agent", codes.PermissionDenied, "is not enrolled"},
		{livedumpv1.AgentService_Renew_FullMethodName, "stale agent cert", codes.PermissionDenied, "is not agent a1a1a1a1a1a1a1a1's current certificate"},
		{livedumpv1.AgentService_Enroll_FullMethodName, "none", codes.OK, ""},
		{"/livedump.v1.FleetService/Unheard", "admin", codes.PermissionDenied, "is not allowed"},
	} {
		t.Run(shortMethod(tc.method)+"/"+tc.who, func(t *testing.T) {
			called := false
			handler := func(ctx context.Context, req any) (any, error) {
				called = true
				id, ok := IdentityFromContext(ctx)
				if tc.who != "none" && !ok {
					t.Error("the handler sees no identity")
				}
				if ok && tc.who == "viewer" && id != viewer {
					t.Errorf("identity %v, want %v", id, viewer)
				}
				return "done", nil
			}
			before := len(r.audit(t))
			resp, err := r.authz.UnaryInterceptor()(peerCtx(certs[tc.who]), &livedumpv1.ListAgentsRequest{}, &grpc.UnaryServerInfo{FullMethod: tc.method}, handler)
			if tc.code == codes.OK {
				if err != nil || resp != "done" || !called {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if called {
				t.Fatal("the handler ran for a refused call")
			}
			wantCode(t, err, tc.code, "")
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("%v: want %q in it", err, tc.msg)
			}
			// Every refusal is audited, without the request.
			es := r.audit(t)
			if len(es) != before+1 {
				t.Fatalf("%d audit entries written, want 1", len(es)-before)
			}
			e := es[len(es)-1]
			wantOutcome := strings.ToLower(tc.code.String())
			if e.Action != shortMethod(tc.method) || !strings.HasPrefix(e.Outcome, wantOutcome+": ") {
				t.Fatalf("audit entry %+v", e)
			}
			if tc.who == "none" && !strings.HasPrefix(e.Actor, "anonymous@192.0.2.7") {
				t.Fatalf("actor %q, want the source address", e.Actor)
			}
			if strings.Contains(e.Details, "selector") {
				t.Fatalf("a refusal's audit entry holds the request: %s", e.Details)
			}
		})
	}
}

// TestAuditedCallsCarryTargetAndRedactedRequest checks what the interceptor
// writes for an allowed mutating call: the actor, the target the handler
// named, the request without its secrets, and the certificate serial.
func TestAuditedCallsCarryTargetAndRedactedRequest(t *testing.T) {
	r := newRig(t, false)
	cert := r.cert(t, admin)
	handler := func(ctx context.Context, req any) (any, error) {
		setAuditTarget(ctx, "agent-x")
		return nil, invalid("labels", "bad")
	}
	_, err := r.authz.UnaryInterceptor()(peerCtx(cert), &livedumpv1.LabelAgentRequest{AgentId: "agent-x", Set: map[string]string{"site": "ber"}},
		&grpc.UnaryServerInfo{FullMethod: livedumpv1.FleetService_LabelAgent_FullMethodName}, handler)
	wantCode(t, err, codes.InvalidArgument, "labels: ")
	es := r.audit(t)
	if len(es) != 1 {
		t.Fatalf("%d entries", len(es))
	}
	e := es[0]
	if e.Actor != admin.String() || e.Target != "agent-x" || e.Outcome != "invalidargument: labels: bad" ||
		!strings.Contains(e.Details, `"site":"ber"`) || e.CertSerial != pki.SerialHex(cert) {
		t.Fatalf("entry %+v", e)
	}

	// Enroll: the token's secret and the CSR never reach the log; the
	// actor is the token's ID.
	tok := "ld1_abcdefgh_" + strings.Repeat("s", 32)
	_, _ = r.authz.UnaryInterceptor()(peerCtx(nil), &livedumpv1.EnrollRequest{Token: tok, Csr: []byte("CSRBYTES")},
		&grpc.UnaryServerInfo{FullMethod: livedumpv1.AgentService_Enroll_FullMethodName},
		func(ctx context.Context, req any) (any, error) { setAuditActor(ctx, "token/abcdefgh"); return nil, nil })
	e = r.audit(t)[1]
	if strings.Contains(e.Details, "sss") || strings.Contains(e.Details, "CSR") || e.Actor != "token/abcdefgh" {
		t.Fatalf("enroll entry %+v", e)
	}

	// A read that is allowed is not audited.
	_, err = r.authz.UnaryInterceptor()(peerCtx(cert), &livedumpv1.ListAgentsRequest{},
		&grpc.UnaryServerInfo{FullMethod: livedumpv1.FleetService_ListAgents_FullMethodName},
		func(ctx context.Context, req any) (any, error) { return nil, nil })
	if err != nil || len(r.audit(t)) != 2 {
		t.Fatalf("err %v, %d entries", err, len(r.audit(t)))
	}
}

// TestRevokedOperatorCertificateRefused checks that the store's revocation
// is applied per call, and audited.
func TestRevokedOperatorCertificateRefused(t *testing.T) {
	r := newRig(t, false)
	cert := r.cert(t, operator)
	ok := func(ctx context.Context, req any) (any, error) { return nil, nil }
	info := &grpc.UnaryServerInfo{FullMethod: livedumpv1.FleetService_ListCaptures_FullMethodName}
	if _, err := r.authz.UnaryInterceptor()(peerCtx(cert), nil, info, ok); err != nil {
		t.Fatal(err)
	}
	if _, err := r.st.RevokeOperatorCert(context.Background(), pki.SerialHex(cert), t0, admin.String()); err != nil {
		t.Fatal(err)
	}
	_, err := r.authz.UnaryInterceptor()(peerCtx(cert), nil, info, ok)
	wantCode(t, err, codes.PermissionDenied, "certificate "+pki.SerialHex(cert)+" of "+operator.String()+" is revoked")
	if es := r.audit(t); len(es) != 1 || es[0].Actor != operator.String() {
		t.Fatalf("audit %+v", es)
	}
}
