package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/livedump/livedump/controller/enroll"
	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

const token = "ldt_abcdefgh_abcdefghijklmnopqrstuvwxyz234567"

func TestEnroll(t *testing.T) {
	r := newRig(t, false)
	cert := r.cert(t, pki.AgentIdentity(agentA))
	r.enroller.Enrollment = enroll.Enrollment{AgentID: agentA, TokenID: "abcdefgh", Cert: cert}
	inv := &livedumpv1.Inventory{Hostname: "WS-A", OsBuild: "22631"}
	ctx, rec := as(pki.Identity{})
	resp, err := r.agent.Enroll(ctx, &livedumpv1.EnrollRequest{Token: token, Csr: []byte("csr"), Labels: map[string]string{"site": "ber"}, Inventory: inv})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetAgentId() != agentA || string(resp.GetCertificateChain()[0]) != string(cert.Raw) || string(resp.GetCaCertificates()[0]) != string(r.ca.Cert.Raw) {
		t.Fatalf("response %v", resp)
	}
	if rec.actor != "token/abcdefgh" || rec.target != agentA {
		t.Fatalf("audit actor %q target %q", rec.actor, rec.target)
	}
	req := r.enroller.Enrolls()[0]
	if req.Token != token || req.Labels["site"] != "ber" || req.Inventory.Hostname != "WS-A" || req.Inventory.OSBuild != "22631" {
		t.Fatalf("enroller got %+v", req)
	}
	if counter(r.metrics.Enrollments.WithLabelValues(resultOK)) != 1 {
		t.Fatal("success not counted")
	}

	for _, tc := range []struct {
		name   string
		req    *livedumpv1.EnrollRequest
		err    error
		code   codes.Code
		field  string
		result string
	}{
		{"oversized token", &livedumpv1.EnrollRequest{Token: strings.Repeat("t", 200), Inventory: inv}, nil, codes.InvalidArgument, "token: 200 bytes", resultInvalid},
		{"no inventory", &livedumpv1.EnrollRequest{Token: token}, nil, codes.InvalidArgument, "inventory: missing", resultInvalid},
		{"control character", &livedumpv1.EnrollRequest{Token: token, Inventory: &livedumpv1.Inventory{Hostname: "WS\x1b[2J"}}, nil, codes.InvalidArgument, "inventory.hostname: contains a non-printable character", resultInvalid},
		{"bad CSR", &livedumpv1.EnrollRequest{Token: token, Inventory: inv}, &enroll.InvalidArgumentError{Field: "csr", Reason: "not a CSR"}, codes.InvalidArgument, "csr: not a CSR", resultInvalid},
		{"denied", &livedumpv1.EnrollRequest{Token: token, Inventory: inv}, fmt.Errorf("%w: token abcdefgh: %w", enroll.ErrDenied, store.ErrTokenExpired), codes.PermissionDenied, "enrollment denied: token unknown, expired, used up or revoked", resultDenied},
		{"store down", &livedumpv1.EnrollRequest{Token: token, Inventory: inv}, errors.New("disk gone"), codes.Internal, "enroll failed", resultError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.enroller.Err = tc.err
			before := counter(r.metrics.Enrollments.WithLabelValues(tc.result))
			_, err := r.agent.Enroll(ctxAs(pki.Identity{}), tc.req)
			wantCode(t, err, tc.code, tc.field)
			if counter(r.metrics.Enrollments.WithLabelValues(tc.result)) != before+1 {
				t.Fatalf("not counted as %s", tc.result)
			}
		})
	}
}

func TestRenew(t *testing.T) {
	r := newRig(t, false)
	r.enroller.Cert = r.cert(t, pki.AgentIdentity(agentA))
	resp, err := r.agent.Renew(ctxAs(pki.AgentIdentity(agentA)), &livedumpv1.RenewRequest{Csr: []byte("csr")})
	if err != nil || string(resp.GetCertificateChain()[0]) != string(r.enroller.Cert.Raw) || len(resp.GetCaCertificates()) != 1 {
		t.Fatalf("%v %v", resp, err)
	}
	// The agent renews its own certificate, whoever it claims to be.
	if got := r.enroller.Renewals(); got[0].AgentID != agentA || string(got[0].Msg) != "csr" {
		t.Fatalf("renewals %v", got)
	}
	r.enroller.Err = fmt.Errorf("%w: agent %s is revoked", enroll.ErrDenied, agentA)
	_, err = r.agent.Renew(ctxAs(pki.AgentIdentity(agentA)), &livedumpv1.RenewRequest{})
	wantCode(t, err, codes.PermissionDenied, "enrollment denied")
	if counter(r.metrics.Renewals.WithLabelValues(resultOK)) != 1 || counter(r.metrics.Renewals.WithLabelValues(resultDenied)) != 1 {
		t.Fatal("renewals not counted by result")
	}
}

// connectStream is an agent's Connect stream: the test writes to in
// (closing it is the agent hanging up) and reads the controller's
// messages from out.
type connectStream struct {
	serverStream
	ender *fakeEnder
	in    chan *livedumpv1.ConnectRequest
	out   chan *livedumpv1.ConnectResponse
}

func newConnectStream(ctx context.Context) *connectStream {
	// As the controller's tap handle makes it: ending the stream ends a
	// Recv with io.EOF.
	e := &fakeEnder{ended: make(chan struct{})}
	ctx = WithStreamEnder(ctx, e)
	return &connectStream{serverStream: serverStream{ctx: ctx}, ender: e, in: make(chan *livedumpv1.ConnectRequest, 64), out: make(chan *livedumpv1.ConnectResponse, 64)}
}

// fakeEnder ends a connectStream as the controller's transport does: the
// agent's side of the stream reads as closed.
type fakeEnder struct {
	once  sync.Once
	ended chan struct{}
}

func (e *fakeEnder) EndStream() { e.once.Do(func() { close(e.ended) }) }

func (s *connectStream) Recv() (*livedumpv1.ConnectRequest, error) {
	select {
	case m, ok := <-s.in:
		if !ok {
			return nil, io.EOF
		}
		return m, nil
	case <-s.ender.ended:
		return nil, io.EOF
	case <-s.ctx.Done():
		return nil, status.FromContextError(s.ctx.Err()).Err()
	}
}

func (s *connectStream) Send(m *livedumpv1.ConnectResponse) error {
	s.out <- m
	return nil
}

func hello(id, host string) *livedumpv1.ConnectRequest {
	return &livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Hello{Hello: &livedumpv1.Hello{AgentId: id,
		Inventory: &livedumpv1.Inventory{Hostname: host, OsBuild: "26100", MemoryBytes: 8 << 30}}}}
}

// connect runs Connect for agent A in the background; the returned
// channel yields its result.
func (r *rig) connect(s *connectStream) <-chan error {
	done := make(chan error, 1)
	go func() { done <- r.agent.Connect(s) }()
	return done
}

// TestConnectSession walks one agent session: Hello, Welcome, every kind
// of report routed to its service, then the agent hanging up.
func TestConnectSession(t *testing.T) {
	r := newRig(t, true)
	r.addAgent(t, store.Agent{ID: agentA, Hostname: "OLD", Labels: map[string]string{"site": "ber"}})
	r.dumps.ReportErr = status.Error(codes.InvalidArgument, "dump.size: negative")
	s := newConnectStream(ctxAs(pki.AgentIdentity(agentA)))
	done := r.connect(s)
	s.in <- hello(agentA, "WS-A")
	w := (<-s.out).GetWelcome()
	if w.GetHeartbeatInterval().AsDuration() != 15*time.Second || w.GetLabels()["site"] != "ber" || w.GetLabels()["hostname"] != "WS-A" {
		t.Fatalf("welcome %v: want the interval and the labels with the new hostname", w)
	}
	if r.caps.Kicks() != 1 || r.peers.Presence(agentA) == "" {
		t.Fatalf("kicks %d, presence %q", r.caps.Kicks(), r.peers.Presence(agentA))
	}
	if m, ok := r.dumps.Memory(agentA); !ok || m != 8<<30 {
		t.Fatalf("memory %d %v", m, ok)
	}
	// A directive queued on the session goes out on the stream.
	dir := &livedumpv1.ConnectResponse{Msg: &livedumpv1.ConnectResponse_Directive{Directive: &livedumpv1.Directive{Id: "d1"}}}
	if err := r.local.Session(agentA).Send(dir); err != nil {
		t.Fatal(err)
	}
	if got := (<-s.out).GetDirective().GetId(); got != "d1" {
		t.Fatalf("sent directive %q", got)
	}

	s.in <- &livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Heartbeat{Heartbeat: &livedumpv1.Heartbeat{}}}
	s.in <- &livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Ack{Ack: &livedumpv1.Ack{DirectiveId: "d1"}}}
	s.in <- &livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Event{Event: &livedumpv1.TriggerEvent{Id: "ev-1"}}}
	s.in <- &livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_CaptureStatus{CaptureStatus: &livedumpv1.CaptureStatus{CaptureId: capID}}}
	s.in <- &livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_ProvisionReport{ProvisionReport: &livedumpv1.ProvisionReport{
		State: livedumpv1.ProvisionState_PROVISION_STATE_REBOOT_REQUIRED, Detail: strings.Repeat("x", 2000)}}}
	s.in <- &livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_DumpReport{DumpReport: &livedumpv1.DumpReport{Dump: &livedumpv1.Dump{Id: dumpA}}}}
	s.in <- &livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_SelfTestReport{SelfTestReport: &livedumpv1.SelfTestReport{DirectiveId: "abc"}}}
	close(s.in)
	if err := <-done; err != nil {
		t.Fatalf("an agent hanging up: %v", err)
	}

	if a := r.caps.Acks(); len(a) != 1 || a[0].AgentID != agentA || a[0].Msg.GetDirectiveId() != "d1" {
		t.Fatalf("acks %v", a)
	}
	if e := r.caps.Ingested(); len(e) != 1 || e[0].AgentID != agentA {
		t.Fatalf("events %v", e)
	}
	if st := r.caps.Statuses(); len(st) != 1 || st[0].Msg.GetCaptureId() != capID {
		t.Fatalf("statuses %v", st)
	}
	a, _ := r.st.GetAgent(context.Background(), agentA)
	if a.Hostname != "WS-A" || a.ProvisionState != "reboot-required" || len(a.ProvisionDetail) != 1024 || !a.LastSeen.Equal(t0) {
		t.Fatalf("stored agent %+v", a)
	}
	if counter(r.metrics.Heartbeats) != 1 || counter(r.metrics.Disconnects.WithLabelValues("closed")) != 1 || counter(r.metrics.SelfTestReportsRefused) != 1 {
		t.Fatal("heartbeat, disconnect or refused report not counted")
	}
	// Refused reports arrive on the stream, past every interceptor: the
	// handler audits them itself.
	var got []string
	for _, e := range r.audit(t) {
		got = append(got, e.Action+" "+e.Actor+" "+e.Target+" "+e.Outcome)
	}
	want := []string{
		"AgentService/DumpReport agent/" + agentA + " " + dumpA + " invalidargument: dump.size: negative",
		"AgentService/SelfTestReport agent/" + agentA + " abc ignored: no self-test directive abc sent to this agent is awaiting a report",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("audit\n%q\nwant\n%q", got, want)
	}
	if d := r.local.Detached(); len(d) != 1 || len(r.peers.DetachedSessions()) != 1 || r.peers.Presence(agentA) != "" {
		t.Fatalf("detached %v, presence %q", d, r.peers.Presence(agentA))
	}
}

func TestConnectRefusals(t *testing.T) {
	r := newRig(t, false)
	r.addAgent(t, store.Agent{ID: agentA})
	for _, tc := range []struct {
		name string
		msgs []*livedumpv1.ConnectRequest
		code codes.Code
		msg  string
	}{
		{"hello for another agent", []*livedumpv1.ConnectRequest{hello(agentB, "WS-B")}, codes.PermissionDenied, "agent " + agentA + " may not speak for agent"},
		{"no hello first", []*livedumpv1.ConnectRequest{{Msg: &livedumpv1.ConnectRequest_Heartbeat{Heartbeat: &livedumpv1.Heartbeat{}}}}, codes.InvalidArgument, "hello: the first message"},
		{"no hostname", []*livedumpv1.ConnectRequest{hello(agentA, "")}, codes.InvalidArgument, "inventory.hostname: missing"},
		{"hello twice", []*livedumpv1.ConnectRequest{hello(agentA, "WS-A"), hello(agentA, "WS-A")}, codes.InvalidArgument, "hello: sent twice"},
		{"empty message", []*livedumpv1.ConnectRequest{hello(agentA, "WS-A"), {}}, codes.InvalidArgument, "msg: empty or unknown message"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newConnectStream(ctxAs(pki.AgentIdentity(agentA)))
			for _, m := range tc.msgs {
				s.in <- m
			}
			wantCode(t, r.agent.Connect(s), tc.code, tc.msg)
		})
	}
	if a := r.local.Attached(); len(a) != 2 || len(r.local.Detached()) != 2 {
		t.Fatalf("attached %v detached %v: a session ended by a bad message is detached", a, r.local.Detached())
	}
}

// TestConnectEnds checks how a session ends when the controller ends it.
func TestConnectEnds(t *testing.T) {
	r := newRig(t, true)
	r.addAgent(t, store.Agent{ID: agentA})

	// The agent is revoked while connected.
	s := newConnectStream(ctxAs(pki.AgentIdentity(agentA)))
	done := r.connect(s)
	s.in <- hello(agentA, "WS-A")
	<-s.out
	r.local.Disconnect(agentA, fleet.ErrRevoked)
	wantCode(t, <-done, codes.PermissionDenied, "agent "+agentA+" is revoked")

	// Events that cannot be stored end the stream with the manager's error.
	r.caps.IngestErr = status.Error(codes.Unavailable, "store down")
	s = newConnectStream(ctxAs(pki.AgentIdentity(agentA)))
	done = r.connect(s)
	s.in <- hello(agentA, "WS-A")
	s.in <- &livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Event{Event: &livedumpv1.TriggerEvent{Id: "ev-1"}}}
	wantCode(t, <-done, codes.Unavailable, "store down")
	if counter(r.metrics.Disconnects.WithLabelValues("revoked")) != 1 || counter(r.metrics.Disconnects.WithLabelValues("error")) != 1 {
		t.Fatal("disconnect reasons not counted")
	}

	// Presence that cannot be recorded refuses the session.
	r.peers.AttachErr = errors.New("lease lost")
	s = newConnectStream(ctxAs(pki.AgentIdentity(agentA)))
	s.in <- hello(agentA, "WS-A")
	wantCode(t, r.agent.Connect(s), codes.Internal, "record presence failed")
	if r.local.Online(agentA) {
		t.Fatal("the session stayed attached")
	}
}

func TestDisconnectStatus(t *testing.T) {
	for _, tc := range []struct {
		cause  error
		reason string
		code   codes.Code
	}{
		{fleet.ErrRevoked, "revoked", codes.PermissionDenied},
		{fleet.ErrReplaced, "replaced", codes.Aborted},
		{fleet.ErrHeartbeatTimeout, "heartbeat_timeout", codes.Unavailable},
		{errCertExpired, "certificate_expired", codes.Unauthenticated},
		{fleet.ErrOutboxFull, "slow_consumer", codes.ResourceExhausted},
		{fleet.ErrStoreUnavailable, "store_unavailable", codes.Unavailable},
		{fleet.ErrShutdown, "shutdown", codes.Unavailable},
		{context.Canceled, "closed", codes.OK},
	} {
		reason, err := disconnectStatus(fmt.Errorf("wrapped: %w", tc.cause), agentA)
		if reason != tc.reason || status.Code(err) != tc.code {
			t.Errorf("%v: %s %v, want %s %v", tc.cause, reason, status.Code(err), tc.reason, tc.code)
		}
	}
}

func TestProvisionStateNames(t *testing.T) {
	for v := range livedumpv1.ProvisionState_name {
		st := livedumpv1.ProvisionState(v)
		if got := provisionStateValue(ProvisionStateName(st)); got != st {
			t.Errorf("%v: round trip gave %v", st, got)
		}
	}
	if ProvisionStateName(livedumpv1.ProvisionState_PROVISION_STATE_REBOOT_REQUIRED) != "reboot-required" || provisionStateValue("nonsense") != 0 {
		t.Fatal("names")
	}
}
