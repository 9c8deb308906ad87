package security

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/harness"
)

// Hole 16: the remote self-test (FleetService.CheckAgents, a SelfTest
// directive answered by a SelfTestReport on the Connect stream) runs dtrace
// on every machine it selects. It must be operator-only, never fleet-wide
// by accident, and the reports it returns must come from the machine asked,
// within bounds.

// selfTestDirectives returns the self-test directives a stream received.
func selfTestDirectives(s *evStream) []*livedumpv1.Directive {
	var out []*livedumpv1.Directive
	for _, d := range s.directives() {
		if d.GetSelfTest() != nil {
			out = append(out, d)
		}
	}
	return out
}

// TestHole16_ViewerCannotCheckAgents: a viewer asks every lab machine to
// run dtrace; refused before any directive leaves, and audited.
func TestHole16_ViewerCannotCheckAgents(t *testing.T) {
	c := harness.StartController(t, nil)
	ra := c.EnrollRaw(t, "LAB-07", map[string]string{"site": "lab"})
	st := evConnect(t, ra, "LAB-07")
	_, err := c.Fleet(t, pki.RoleViewer).CheckAgents(context.Background(), &livedumpv1.CheckAgentsRequest{Selector: "site=lab", Wait: durationpb.New(time.Second)})
	harness.WantCode(t, err, codes.PermissionDenied, "operator")
	time.Sleep(200 * time.Millisecond)
	if d := selfTestDirectives(st); len(d) != 0 {
		t.Fatalf("the agent received %d self-test directives from a viewer's call", len(d))
	}
	if es := rolesAudit(t, c, viewerActor, "CheckAgents"); len(es) != 1 || es[0].Outcome == "ok" {
		t.Fatalf("audit of the refused check: %+v", es)
	}
}

// TestHole16_EmptySelectorRefused: an operator's self-test without a
// selector (or a blank one) would run dtrace on the whole fleet: refused
// naming the selector, audited, and no agent is asked.
func TestHole16_EmptySelectorRefused(t *testing.T) {
	c := harness.StartController(t, nil)
	ra := c.EnrollRaw(t, "LAB-07", map[string]string{"site": "lab"})
	st := evConnect(t, ra, "LAB-07")
	op := c.Fleet(t, pki.RoleOperator)
	for _, sel := range []string{"", "   "} {
		_, err := op.CheckAgents(context.Background(), &livedumpv1.CheckAgentsRequest{Selector: sel, Wait: durationpb.New(time.Second)})
		harness.WantCode(t, err, codes.InvalidArgument, "selector")
	}
	_, err := op.CheckAgents(context.Background(), &livedumpv1.CheckAgentsRequest{Selector: "site=lab", Wait: durationpb.New(time.Hour)})
	harness.WantCode(t, err, codes.InvalidArgument, "wait")
	time.Sleep(200 * time.Millisecond)
	if d := selfTestDirectives(st); len(d) != 0 {
		t.Fatalf("the agent received %d self-test directives", len(d))
	}
	es := rolesAudit(t, c, "operator/operator/test-operator", "CheckAgents")
	if len(es) != 3 {
		t.Fatalf("want 3 audited refusals, got %+v", es)
	}
	for _, e := range es {
		if e.Outcome == "ok" {
			t.Fatalf("refused call audited as ok: %+v", e)
		}
	}
}

// TestHole16_ForgedSelfTestReport: a stolen agent identity (B) answers the
// self-test of another machine (A) with an all-PASS report, answers a
// directive nobody sent, and answers its own with an oversized report.
// None of them reaches the operator: A's result says it did not answer,
// B's result is only the well-formed report B sent last; each forgery is
// audited against B.
func TestHole16_ForgedSelfTestReport(t *testing.T) {
	c := harness.StartController(t, nil)
	victim := c.EnrollRaw(t, "LAB-VICTIM", map[string]string{"site": "lab"})
	thief := c.EnrollRaw(t, "LAB-THIEF", map[string]string{"site": "lab"})
	vs := evConnect(t, victim, "LAB-VICTIM")
	ts := evConnect(t, thief, "LAB-THIEF")

	type answer struct {
		resp *livedumpv1.CheckAgentsResponse
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		resp, err := c.Fleet(t, pki.RoleOperator).CheckAgents(context.Background(),
			&livedumpv1.CheckAgentsRequest{Selector: "site=lab", Wait: durationpb.New(3 * time.Second)})
		done <- answer{resp, err}
	}()
	harness.Eventually(t, 5*time.Second, "both agents receive a self-test directive", func() bool {
		return len(selfTestDirectives(vs)) == 1 && len(selfTestDirectives(ts)) == 1
	})
	victimDir := selfTestDirectives(vs)[0].GetId()
	thiefDir := selfTestDirectives(ts)[0].GetId()
	allPass := func(id string) *livedumpv1.SelfTestReport {
		return &livedumpv1.SelfTestReport{DirectiveId: id, Checks: []*livedumpv1.SelfTestCheck{
			{Name: "dtrace.driver", Status: livedumpv1.SelfTestStatus_SELF_TEST_STATUS_PASS, Evidence: "forged"},
		}}
	}
	send := func(r *livedumpv1.SelfTestReport) {
		ts.send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_SelfTestReport{SelfTestReport: r}})
	}
	// 1. The victim's directive, answered by the thief.
	send(allPass(victimDir))
	// 2. A directive nobody sent.
	send(allPass("0123456789abcdef01234567"))
	// 3. Its own directive, with a report far over the limits.
	big := &livedumpv1.SelfTestReport{DirectiveId: thiefDir}
	for i := 0; i < 64; i++ {
		big.Checks = append(big.Checks, &livedumpv1.SelfTestCheck{Name: "dtrace.driver", Status: livedumpv1.SelfTestStatus_SELF_TEST_STATUS_PASS, Evidence: strings.Repeat("x", 1000)})
	}
	send(big)
	// 4. Its own directive, well formed: the only report that may arrive.
	own := allPass(thiefDir)
	own.Checks[0].Evidence = "the thief's own machine"
	send(own)

	a := <-done
	if a.err != nil {
		t.Fatal(a.err)
	}
	byHost := map[string]*livedumpv1.AgentSelfTestResult{}
	for _, r := range a.resp.GetResults() {
		byHost[r.GetHostname()] = r
	}
	if r := byHost["LAB-VICTIM"]; r == nil || r.GetReport() != nil || !strings.Contains(r.GetError(), "no report within") {
		t.Errorf("victim's result carries a report it never sent: %v", r)
	}
	if r := byHost["LAB-THIEF"]; r == nil || len(r.GetReport().GetChecks()) != 1 || r.GetReport().GetChecks()[0].GetEvidence() != "the thief's own machine" {
		size := 0
		for _, c := range r.GetReport().GetChecks() {
			size += len(c.GetEvidence())
		}
		t.Errorf("thief's result is not its one well-formed report: %d checks, %d bytes of evidence, error %q",
			len(r.GetReport().GetChecks()), size, r.GetError())
	}
	var ignored, invalid int
	for _, e := range rolesAudit(t, c, "agent/"+thief.ID, "SelfTestReport") {
		switch {
		case strings.HasPrefix(e.Outcome, "ignored"):
			ignored++
		case strings.HasPrefix(e.Outcome, "invalid_argument") && strings.Contains(e.Outcome, "bytes encoded"):
			invalid++
		}
	}
	if ignored != 2 || invalid != 1 {
		t.Errorf("audit: %d ignored, %d oversized refusals; want 2 and 1", ignored, invalid)
	}
}

// TestHole16_RealAgentAnswers is the control: a real agent on a simulated
// machine answers the operator's self-test with its own checks.
func TestHole16_RealAgentAnswers(t *testing.T) {
	c := harness.StartController(t, nil)
	ag := harness.StartAgent(t, c, harness.AgentOpts{Token: c.Token(t, 1, map[string]string{"site": "lab"}), Hostname: "LAB-REAL"})
	_ = ag
	viewer := c.Fleet(t, pki.RoleViewer)
	harness.Eventually(t, 10*time.Second, "agent online", func() bool {
		l, err := viewer.ListAgents(context.Background(), &livedumpv1.ListAgentsRequest{Selector: "hostname=LAB-REAL"})
		return err == nil && len(l.GetAgents()) == 1 && l.GetAgents()[0].GetState() == livedumpv1.AgentState_AGENT_STATE_ONLINE
	})
	resp, err := c.Fleet(t, pki.RoleOperator).CheckAgents(context.Background(), &livedumpv1.CheckAgentsRequest{Selector: "hostname=LAB-REAL", Wait: durationpb.New(30 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResults()) != 1 || len(resp.GetResults()[0].GetReport().GetChecks()) != 10 {
		t.Fatalf("want one report with 10 checks: %v", resp)
	}
	if es := rolesAudit(t, c, "operator/operator/test-operator", "CheckAgents"); len(es) != 1 || es[0].Outcome != "ok" {
		t.Fatalf("audit of the check: %+v", es)
	}
}
