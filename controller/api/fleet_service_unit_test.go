package api

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/controller/enroll"
	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/store"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

const (
	agentA = "a1a1a1a1a1a1a1a1"
	agentB = "b2b2b2b2b2b2b2b2"
	agentC = "c3c3c3c3c3c3c3c3"
)

// TestListAgentsState checks the live state ListAgents shows: online from
// this replica's session (with its fresher heartbeat) or from a peer,
// revoked before anything, offline otherwise; and the selector filter.
func TestListAgentsState(t *testing.T) {
	r := newRig(t, true)
	r.addAgent(t, store.Agent{ID: agentA, Hostname: "WS-A", Labels: map[string]string{"site": "ber"}})
	r.addAgent(t, store.Agent{ID: agentB, Hostname: "WS-B", Labels: map[string]string{"site": "ber"}})
	r.addAgent(t, store.Agent{ID: agentC, Hostname: "WS-C", Revoked: true})
	hb := t0.Add(time.Minute)
	r.local.Connect(agentA, hb)
	r.peers.SetOnline(agentB, true)
	r.peers.SetOnline(agentC, true) // revoked wins

	resp, err := r.fleet.ListAgents(ctxAs(viewer), &livedumpv1.ListAgentsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*livedumpv1.Agent{}
	for _, a := range resp.GetAgents() {
		got[a.GetId()] = a
	}
	if len(got) != 3 || resp.GetNext() != "" {
		t.Fatalf("agents %v next %q", got, resp.GetNext())
	}
	if a := got[agentA]; a.GetState() != livedumpv1.AgentState_AGENT_STATE_ONLINE || !a.GetLastSeen().AsTime().Equal(hb) {
		t.Fatalf("agent A: %v, last seen %v; want online at the heartbeat", a.GetState(), a.GetLastSeen().AsTime())
	}
	if a := got[agentB]; a.GetState() != livedumpv1.AgentState_AGENT_STATE_ONLINE || !a.GetLastSeen().AsTime().Equal(t0.Add(-time.Hour)) {
		t.Fatalf("agent B: %v, last seen %v; want online on a peer, last seen as stored", a.GetState(), a.GetLastSeen().AsTime())
	}
	if a := got[agentC]; a.GetState() != livedumpv1.AgentState_AGENT_STATE_REVOKED {
		t.Fatalf("agent C: %v", a.GetState())
	}
	if l := got[agentA].GetLabels(); l["site"] != "ber" || l["hostname"] != "WS-A" {
		t.Fatalf("labels %v: want the user and built-in labels", l)
	}

	r.peers.SetOnline(agentB, false)
	resp, err = r.fleet.ListAgents(ctxAs(viewer), &livedumpv1.ListAgentsRequest{Selector: "site=ber"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetAgents()) != 2 || resp.GetAgents()[1].GetState() != livedumpv1.AgentState_AGENT_STATE_OFFLINE {
		t.Fatalf("site=ber: %v", resp.GetAgents())
	}

	_, err = r.fleet.ListAgents(ctxAs(viewer), &livedumpv1.ListAgentsRequest{Selector: "site in (("})
	wantCode(t, err, codes.InvalidArgument, "selector: ")
	_, err = r.fleet.ListAgents(ctxAs(viewer), &livedumpv1.ListAgentsRequest{After: encodeCursor("ListTokens", "x", "y")})
	wantCode(t, err, codes.InvalidArgument, "after: not a page token of ListAgents")
}

func TestLabelAgent(t *testing.T) {
	r := newRig(t, false)
	r.addAgent(t, store.Agent{ID: agentA, Hostname: "WS-A", Labels: map[string]string{"site": "ber", "team": "x"}})
	for _, tc := range []struct {
		name  string
		req   *livedumpv1.LabelAgentRequest
		code  codes.Code
		field string
	}{
		{"bad agent ID", &livedumpv1.LabelAgentRequest{AgentId: "../x", Set: map[string]string{"a": "b"}}, codes.InvalidArgument, "agent_id: "},
		{"nothing to do", &livedumpv1.LabelAgentRequest{AgentId: agentA}, codes.InvalidArgument, "set: nothing to set or remove"},
		{"bad key", &livedumpv1.LabelAgentRequest{AgentId: agentA, Set: map[string]string{"bad key": "b"}}, codes.InvalidArgument, "set: "},
		{"built-in set", &livedumpv1.LabelAgentRequest{AgentId: agentA, Set: map[string]string{"hostname": "b"}}, codes.InvalidArgument, "set: "},
		{"built-in removed", &livedumpv1.LabelAgentRequest{AgentId: agentA, Remove: []string{"hostname"}}, codes.InvalidArgument, `remove: label key "hostname": built-in label`},
		{"set and removed", &livedumpv1.LabelAgentRequest{AgentId: agentA, Set: map[string]string{"a": "1"}, Remove: []string{"a"}}, codes.InvalidArgument, `remove: label key "a" is both set and removed`},
		{"unknown agent", &livedumpv1.LabelAgentRequest{AgentId: agentB, Set: map[string]string{"a": "1"}}, codes.NotFound, "agent " + agentB + ": not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.fleet.LabelAgent(ctxAs(operator), tc.req)
			wantCode(t, err, tc.code, tc.field)
		})
	}
	ctx, rec := as(operator)
	resp, err := r.fleet.LabelAgent(ctx, &livedumpv1.LabelAgentRequest{AgentId: agentA, Set: map[string]string{"site": "muc", "rack": "7"}, Remove: []string{"team"}})
	if err != nil {
		t.Fatal(err)
	}
	if l := resp.GetAgent().GetLabels(); l["site"] != "muc" || l["rack"] != "7" || l["team"] != "" || l["hostname"] != "WS-A" {
		t.Fatalf("labels %v", l)
	}
	if a, _ := r.st.GetAgent(context.Background(), agentA); a.Labels["site"] != "muc" || len(a.Labels) != 2 {
		t.Fatalf("stored labels %v", a.Labels)
	}
	if rec.target != agentA {
		t.Fatalf("audit target %q", rec.target)
	}
}

// TestRevokeAgent checks that a revocation ends the agent's stream: here
// alone for a lone controller, through the cluster for a replica.
func TestRevokeAgent(t *testing.T) {
	for _, replica := range []bool{false, true} {
		r := newRig(t, replica)
		r.addAgent(t, store.Agent{ID: agentA})
		r.local.Connect(agentA, t0)
		ctx, rec := as(admin)
		resp, err := r.fleet.RevokeAgent(ctx, &livedumpv1.RevokeAgentRequest{AgentId: agentA})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetAgent().GetState() != livedumpv1.AgentState_AGENT_STATE_REVOKED || rec.target != agentA {
			t.Fatalf("state %v, target %q", resp.GetAgent().GetState(), rec.target)
		}
		if a, _ := r.st.GetAgent(context.Background(), agentA); !a.Revoked {
			t.Fatal("not revoked in the store")
		}
		d := r.local.Disconnects()
		if replica {
			if agents, _, _ := r.peers.Revocations(); len(agents) != 1 || agents[0] != agentA || len(d) != 0 {
				t.Fatalf("replica: broadcast %v, local disconnects %v", agents, d)
			}
		} else if len(d) != 1 || d[0].AgentID != agentA || !errors.Is(d[0].Msg, fleet.ErrRevoked) {
			t.Fatalf("lone: disconnects %v", d)
		}
		_, err = r.fleet.RevokeAgent(ctx, &livedumpv1.RevokeAgentRequest{AgentId: agentB})
		wantCode(t, err, codes.NotFound, "agent "+agentB+": not found")
		_, err = r.fleet.RevokeAgent(ctx, &livedumpv1.RevokeAgentRequest{})
		wantCode(t, err, codes.InvalidArgument, "agent_id: ")
	}
}

func TestCreateToken(t *testing.T) {
	r := newRig(t, false)
	r.enroller.Token = store.Token{ID: "tok12345", Uses: 3, UsesLeft: 3, Created: t0, Expires: t0.Add(time.Hour), CreatedBy: admin.String()}
	r.enroller.Secret = "ld1_tok12345_secret"
	ctx, rec := as(admin)
	resp, err := r.fleet.CreateToken(ctx, &livedumpv1.CreateTokenRequest{Uses: 3, Ttl: durationpb.New(time.Hour), Labels: map[string]string{"site": "ber"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetSecret() != "ld1_tok12345_secret" || resp.GetToken().GetId() != "tok12345" || resp.GetToken().GetUsesLeft() != 3 ||
		!resp.GetToken().GetExpires().AsTime().Equal(t0.Add(time.Hour)) || rec.target != "tok12345" {
		t.Fatalf("response %v, target %q", resp, rec.target)
	}
	req := r.enroller.TokenRequests()[0]
	if req.Uses != 3 || req.TTL != time.Hour || req.Labels["site"] != "ber" || req.CreatedBy != admin.String() {
		t.Fatalf("enroller got %+v", req)
	}

	for _, tc := range []struct {
		name  string
		ttl   *durationpb.Duration
		err   error
		code  codes.Code
		field string
	}{
		{"negative ttl", durationpb.New(-time.Second), nil, codes.InvalidArgument, "ttl: must be positive"},
		{"invalid ttl", &durationpb.Duration{Seconds: 1, Nanos: -1}, nil, codes.InvalidArgument, "ttl: "},
		{"refused by the enroller", nil, &enroll.InvalidArgumentError{Field: "uses", Reason: "too many"}, codes.InvalidArgument, "uses: too many"},
		{"store failure", nil, errors.New("disk on fire"), codes.Internal, "create token failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.enroller.Err = tc.err
			_, err := r.fleet.CreateToken(ctxAs(admin), &livedumpv1.CreateTokenRequest{Ttl: tc.ttl})
			wantCode(t, err, tc.code, tc.field)
			if strings.Contains(err.Error(), "fire") {
				t.Fatal("an internal error's detail reached the caller")
			}
		})
	}
}

func TestRevokeToken(t *testing.T) {
	r := newRig(t, false)
	if err := r.st.CreateToken(context.Background(), store.Token{ID: "tok12345", SecretHash: []byte("h"), Uses: 1, UsesLeft: 1, Created: t0, Expires: t0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	_, err := r.fleet.RevokeToken(ctxAs(admin), &livedumpv1.RevokeTokenRequest{})
	wantCode(t, err, codes.InvalidArgument, "id: missing")
	_, err = r.fleet.RevokeToken(ctxAs(admin), &livedumpv1.RevokeTokenRequest{Id: "nope"})
	wantCode(t, err, codes.NotFound, "token nope: not found")
	ctx, rec := as(admin)
	resp, err := r.fleet.RevokeToken(ctx, &livedumpv1.RevokeTokenRequest{Id: "tok12345"})
	if err != nil || !resp.GetToken().GetRevoked() || rec.target != "tok12345" {
		t.Fatalf("%v %v target %q", resp, err, rec.target)
	}
}

func TestListAuditArguments(t *testing.T) {
	r := newRig(t, false)
	for i := range 3 {
		if _, err := r.st.AppendAudit(context.Background(), store.AuditEntry{Time: t0.Add(time.Duration(i) * time.Second), Actor: "x", Action: "A", Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		req   *livedumpv1.ListAuditRequest
		field string
	}{
		{&livedumpv1.ListAuditRequest{Limit: -1}, "limit: must be between 0 and 10000, got -1"},
		{&livedumpv1.ListAuditRequest{Limit: 10001}, "limit: "},
		{&livedumpv1.ListAuditRequest{Since: &timestamppb.Timestamp{Nanos: -1}}, "since: "},
		{&livedumpv1.ListAuditRequest{After: encodeCursor("ListAudit", "1", "0")}, "after: not a page token of ListAudit"},
		{&livedumpv1.ListAuditRequest{After: encodeCursor("ListAudit", "x", "1")}, "after: not a page token of ListAudit"},
	} {
		_, err := r.fleet.ListAudit(ctxAs(admin), tc.req)
		wantCode(t, err, codes.InvalidArgument, tc.field)
	}
	resp, err := r.fleet.ListAudit(ctxAs(admin), &livedumpv1.ListAuditRequest{Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetEntries()) != 2 || resp.GetEntries()[0].GetTime().AsTime() != t0.Add(2*time.Second) || resp.GetNext() == "" {
		t.Fatalf("first page %v", resp)
	}
	resp, err = r.fleet.ListAudit(ctxAs(admin), &livedumpv1.ListAuditRequest{Limit: 2, After: resp.GetNext()})
	if err != nil || len(resp.GetEntries()) != 1 || resp.GetNext() != "" {
		t.Fatalf("second page %v %v", resp, err)
	}
	resp, err = r.fleet.ListAudit(ctxAs(admin), &livedumpv1.ListAuditRequest{Since: timestamppb.New(t0.Add(time.Second))})
	if err != nil || len(resp.GetEntries()) != 2 {
		t.Fatalf("since: %v %v", resp, err)
	}
}
