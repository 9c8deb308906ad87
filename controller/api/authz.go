package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// caller says who may call a method.
type caller int

const (
	anyone caller = iota + 1 // no client certificate needed (Enroll, health)
	agents
	operators
	certified // any verified client certificate, agent or operator
)

// rule is the authorization policy of one RPC.
type rule struct {
	caller   caller
	minRole  pki.Role // operators only
	mutating bool     // written to the audit log
	audit    bool     // written to the audit log though it changes nothing
}

// audited says whether every call, allowed or not, is written to the audit
// log. Refused calls of every method are written in any case.
func (r rule) audited() bool { return r.mutating || r.audit }

// policy is default-deny: a method missing here cannot be called at all, so
// a new RPC is unusable until someone decides who may call it.
var policy = map[string]rule{
	livedumpv1.AgentService_Enroll_FullMethodName:        {caller: anyone, mutating: true},
	livedumpv1.AgentService_Renew_FullMethodName:         {caller: agents, mutating: true},
	livedumpv1.AgentService_Connect_FullMethodName:       {caller: agents},
	livedumpv1.AgentService_FetchArtifact_FullMethodName: {caller: agents},
	livedumpv1.AgentService_UploadDump_FullMethodName:    {caller: agents, mutating: true},
	livedumpv1.AgentService_DumpOffset_FullMethodName:    {caller: agents},

	livedumpv1.FleetService_ListAgents_FullMethodName:  {caller: operators, minRole: pki.RoleViewer},
	livedumpv1.FleetService_LabelAgent_FullMethodName:  {caller: operators, minRole: pki.RoleOperator, mutating: true},
	livedumpv1.FleetService_RevokeAgent_FullMethodName: {caller: operators, minRole: pki.RoleAdmin, mutating: true},
	livedumpv1.FleetService_CreateToken_FullMethodName: {caller: operators, minRole: pki.RoleAdmin, mutating: true},
	livedumpv1.FleetService_ListTokens_FullMethodName:  {caller: operators, minRole: pki.RoleAdmin},
	livedumpv1.FleetService_RevokeToken_FullMethodName: {caller: operators, minRole: pki.RoleAdmin, mutating: true},
	livedumpv1.FleetService_ListAudit_FullMethodName:   {caller: operators, minRole: pki.RoleAdmin},

	livedumpv1.FleetService_PlanProvision_FullMethodName:   {caller: operators, minRole: pki.RoleOperator, audit: true}, // every agent inspects its machine
	livedumpv1.FleetService_ApplyProvision_FullMethodName:  {caller: operators, minRole: pki.RoleOperator, mutating: true},
	livedumpv1.FleetService_RevertProvision_FullMethodName: {caller: operators, minRole: pki.RoleOperator, mutating: true},
	livedumpv1.FleetService_UploadArtifact_FullMethodName:  {caller: operators, minRole: pki.RoleAdmin, mutating: true},
	// A self-test changes nothing but runs dtrace (probes enabled for a
	// moment) on every selected machine: an action on the fleet, not a
	// read of what the controller stores, so operator, and audited.
	livedumpv1.FleetService_CheckAgents_FullMethodName: {caller: operators, minRole: pki.RoleOperator, audit: true},

	livedumpv1.FleetService_CreateCapture_FullMethodName: {caller: operators, minRole: pki.RoleOperator, mutating: true},
	livedumpv1.FleetService_CancelCapture_FullMethodName: {caller: operators, minRole: pki.RoleOperator, mutating: true},
	livedumpv1.FleetService_ListCaptures_FullMethodName:  {caller: operators, minRole: pki.RoleViewer},
	livedumpv1.FleetService_GetCapture_FullMethodName:    {caller: operators, minRole: pki.RoleViewer},
	livedumpv1.FleetService_WatchCapture_FullMethodName:  {caller: operators, minRole: pki.RoleViewer},
	livedumpv1.FleetService_ListEvents_FullMethodName:    {caller: operators, minRole: pki.RoleViewer},
	livedumpv1.FleetService_BucketEvents_FullMethodName:  {caller: operators, minRole: pki.RoleViewer},
	livedumpv1.FleetService_ListDumps_FullMethodName:     {caller: operators, minRole: pki.RoleViewer},
	livedumpv1.FleetService_GetDump_FullMethodName:       {caller: operators, minRole: pki.RoleOperator}, // dumps hold kernel memory
	livedumpv1.FleetService_PullDump_FullMethodName:      {caller: operators, minRole: pki.RoleOperator, mutating: true},

	livedumpv1.FleetService_ListOperatorCertificates_FullMethodName:  {caller: operators, minRole: pki.RoleAdmin},
	livedumpv1.FleetService_RevokeOperatorCertificate_FullMethodName: {caller: operators, minRole: pki.RoleAdmin, mutating: true},

	// Deleting destroys evidence: admin only, audited.
	livedumpv1.FleetService_DeleteDump_FullMethodName:    {caller: operators, minRole: pki.RoleAdmin, mutating: true},
	livedumpv1.FleetService_DeleteCapture_FullMethodName: {caller: operators, minRole: pki.RoleAdmin, mutating: true},
	// Describing an agent is a read (viewer); its log_lines part, the tail
	// of the agent's own log fetched from the machine, needs operator and
	// is checked in the handler. Audited: who looked at which machine.
	livedumpv1.FleetService_DescribeAgent_FullMethodName: {caller: operators, minRole: pki.RoleViewer, audit: true},

	"/grpc.health.v1.Health/Check": {caller: anyone},
	// A Watch stream is held open: not for callers without a certificate
	// (load balancers use Check).
	"/grpc.health.v1.Health/Watch": {caller: certified},
	"/grpc.health.v1.Health/List":  {caller: anyone},
}

// KnownMethod reports whether method is in the policy table. Calls to
// other methods are refused whoever makes them.
func KnownMethod(method string) bool {
	_, ok := policy[method]
	return ok
}

type identityKey struct{}

// IdentityFromContext returns the authenticated caller of an RPC.
func IdentityFromContext(ctx context.Context) (pki.Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(pki.Identity)
	return id, ok
}

// auditRecord lets a handler add what only it knows (the target, and for
// Enroll the actor) to the audit entry the interceptor writes.
type auditRecord struct {
	actor  string
	target string
}

type auditKey struct{}

// setAuditTarget names the object a mutating call acted on.
func setAuditTarget(ctx context.Context, target string) {
	if r, ok := ctx.Value(auditKey{}).(*auditRecord); ok {
		r.target = target
	}
}

// setAuditActor overrides the actor, for calls made before the caller has an
// identity (Enroll is made in the name of a token).
func setAuditActor(ctx context.Context, actor string) {
	if r, ok := ctx.Value(auditKey{}).(*auditRecord); ok {
		r.actor = actor
	}
}

// Authorizer authenticates callers from their verified TLS certificate,
// enforces the policy table and writes the audit log.
type Authorizer struct {
	Store  store.Store
	Logger *slog.Logger
	Now    func() time.Time
	// Streams registers every authorized stream under its owner, so that
	// revocations end them; nil: streams are not tracked.
	Streams *fleet.Streams

	seen operatorSeen // when each operator certificate was last recorded
}

// peerIdentity returns the identity in the verified client certificate, or
// ok=false when the client sent none.
func peerIdentity(ctx context.Context) (pki.Identity, bool, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return pki.Identity{}, false, nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return pki.Identity{}, false, nil
	}
	id, err := pki.IdentityFromCert(info.State.VerifiedChains[0][0])
	if err != nil {
		return pki.Identity{}, false, err
	}
	return id, true, nil
}

// authorize returns the context carrying the caller's identity, or the
// status error that refuses the call.
func (a *Authorizer) authorize(ctx context.Context, method string) (context.Context, rule, error) {
	r, ok := policy[method]
	if !ok {
		return ctx, r, status.Errorf(codes.PermissionDenied, "method %s is not allowed", method)
	}
	id, has, err := peerIdentity(ctx)
	if err != nil {
		return ctx, r, status.Errorf(codes.Unauthenticated, "client certificate: %v", err)
	}
	if has {
		ctx = context.WithValue(ctx, identityKey{}, id)
	}
	short := shortMethod(method)
	switch r.caller {
	case anyone:
		return ctx, r, nil
	case certified:
		if !has {
			return ctx, r, status.Errorf(codes.Unauthenticated, "%s requires a client certificate", short)
		}
		return ctx, r, nil
	case agents:
		if !has {
			return ctx, r, status.Errorf(codes.Unauthenticated, "%s requires an agent client certificate", short)
		}
		if id.Kind != pki.KindAgent {
			return ctx, r, status.Errorf(codes.PermissionDenied, "%s may only be called by agents, not %s", short, id)
		}
		ag, err := a.Store.GetAgent(ctx, id.AgentID)
		if errors.Is(err, store.ErrNotFound) {
			return ctx, r, status.Errorf(codes.PermissionDenied, "agent %s is not enrolled", id.AgentID)
		}
		if err != nil {
			return ctx, r, status.Errorf(codes.Unavailable, "look up agent: %v", err)
		}
		if ag.Revoked {
			return ctx, r, status.Errorf(codes.PermissionDenied, "agent %s is revoked", id.AgentID)
		}
		if ctx, err = a.checkAgentCert(ctx, method, ag); err != nil {
			return ctx, r, err
		}
		return ctx, r, nil
	case operators:
		if !has {
			return ctx, r, status.Errorf(codes.Unauthenticated, "%s requires an operator client certificate", short)
		}
		if id.Kind != pki.KindOperator {
			return ctx, r, status.Errorf(codes.PermissionDenied, "%s may only be called by operators, not %s", short, id)
		}
		if err := a.checkOperatorCert(ctx, id); err != nil {
			return ctx, r, err
		}
		if !id.Role.Allows(r.minRole) {
			return ctx, r, status.Errorf(codes.PermissionDenied, "role %s may not call %s (needs %s)", id.Role, short, r.minRole)
		}
		return ctx, r, nil
	}
	return ctx, r, status.Errorf(codes.PermissionDenied, "method %s is not allowed", method)
}

// UnaryInterceptor enforces the policy and audits mutating calls, and every
// refused call: a denied attempt is exactly what an audit log is for.
func (a *Authorizer) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, r, err := a.authorize(ctx, info.FullMethod)
		if err != nil {
			a.auditRefusal(ctx, info.FullMethod, err)
			return nil, err
		}
		if !r.audited() {
			return handler(ctx, req)
		}
		rec := &auditRecord{actor: actorOf(ctx)}
		ctx = context.WithValue(ctx, auditKey{}, rec)
		resp, err := handler(ctx, req)
		a.audit(ctx, info.FullMethod, rec, req, err)
		return resp, err
	}
}

// StreamInterceptor enforces the policy on streaming RPCs, and audits as
// UnaryInterceptor does.
func (a *Authorizer) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, r, err := a.authorize(ss.Context(), info.FullMethod)
		if err != nil {
			a.auditRefusal(ctx, info.FullMethod, err)
			return err
		}
		if !r.audited() {
			return a.serveStream(ctx, srv, ss, info, handler)
		}
		rec := &auditRecord{actor: actorOf(ctx)}
		ctx = context.WithValue(ctx, auditKey{}, rec)
		err = a.serveStream(ctx, srv, ss, info, handler)
		a.audit(ctx, info.FullMethod, rec, nil, err)
		return err
	}
}

// auditRefusal writes a call the policy refused: who, which method and why,
// never the request (whoever was refused does not get to fill the log).
func (a *Authorizer) auditRefusal(ctx context.Context, method string, err error) {
	a.audit(ctx, method, &auditRecord{actor: actorOf(ctx)}, nil, err)
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrappedStream) Context() context.Context { return w.ctx }

func actorOf(ctx context.Context) string {
	if id, ok := IdentityFromContext(ctx); ok {
		return id.String()
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return "anonymous@" + p.Addr.String()
	}
	return "anonymous"
}

func shortMethod(full string) string {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndex(full, "."); i >= 0 {
		full = full[i+1:]
	}
	return full
}

// audit writes one entry. A failure to audit is logged loudly but does not
// undo the call, which has already happened.
func (a *Authorizer) audit(ctx context.Context, method string, rec *auditRecord, req any, err error) {
	outcome := "ok"
	if err != nil {
		st := status.Convert(err)
		outcome = fmt.Sprintf("%s: %s", strings.ToLower(st.Code().String()), st.Message())
	}
	e := store.AuditEntry{
		Time:    a.Now().UTC(),
		Actor:   truncateAudit(rec.actor, 256),
		Action:  truncateAudit(shortMethod(method), 128),
		Target:  truncateAudit(rec.target, 256),
		Outcome: truncateAudit(outcome, 512),
		Details: auditDetails(req),

		CertSerial: callerSerial(ctx),
	}
	if _, ok := IdentityFromContext(ctx); !ok {
		// Anyone can make these calls: keep what they cost the audit log
		// bounded, whatever they sent.
		e.Details = anonymousDetails(ctx)
		boundAnonymousEntry(&e)
	}
	// The caller's context may already be cancelled; the record must still land.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, aerr := a.Store.AppendAudit(actx, e); aerr != nil {
		a.Logger.Error("audit write failed", "action", e.Action, "actor", e.Actor, "err", aerr)
	}
}

// truncateAudit bounds a field that may hold what a caller chose (a method
// name outside the policy, a refusal message quoting it).
func truncateAudit(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// auditDetails renders the request as JSON with secrets and bulky fields
// removed: the token secret and CSRs never reach the log.
func auditDetails(req any) string {
	m, ok := req.(proto.Message)
	if !ok {
		return ""
	}
	m = proto.Clone(m)
	switch r := m.(type) {
	case *livedumpv1.EnrollRequest:
		r.Token = "" // the actor already names the token ID
		r.Csr = nil
	case *livedumpv1.RenewRequest:
		r.Csr = nil
	}
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return ""
	}
	return string(b)
}

// maxAnonymousAudit bounds the text of an audit entry of a caller without a
// certificate: the method, the source address, the outcome and the token ID.
const maxAnonymousAudit = 1024

// anonymousDetails is the JSON detail of a call without a certificate: only
// its source address, never what it sent.
func anonymousDetails(ctx context.Context) string {
	src := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		src = p.Addr.String()
	}
	b, _ := json.Marshal(map[string]string{"source": src})
	return string(b)
}

// boundAnonymousEntry truncates an entry so its text fields total at most
// maxAnonymousAudit bytes, marking what was cut.
func boundAnonymousEntry(e *store.AuditEntry) {
	const marker = "...[truncated]"
	budget := maxAnonymousAudit
	for _, f := range []*string{&e.Action, &e.Actor, &e.Target, &e.Details, &e.Outcome} {
		if f == &e.Details && len(*f) > budget/4 {
			*f = `{"truncated":true}`
		}
		if len(*f) > budget {
			*f = strings.ToValidUTF8((*f)[:max(budget-len(marker), 0)], "") + marker
			if len(*f) > budget {
				*f = ""
			}
		}
		budget -= len(*f)
	}
}
