package security

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/controller/api"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/harness"
)

// Issue 16: agents describe fetches the tail of the agent's own log over
// its stream (FleetService.DescribeAgent with log_lines, an AgentLog
// directive answered by an AgentLogReport). Logs hold hostnames, paths and
// errors: operator only; every bound holds whatever the caller or the
// agent sends.

// logDirectives returns the log directives a stream received.
func logDirectives(s *evStream) []*livedumpv1.Directive {
	var out []*livedumpv1.Directive
	for _, d := range s.directives() {
		if d.GetAgentLog() != nil {
			out = append(out, d)
		}
	}
	return out
}

// describeAsync runs DescribeAgent in the background.
func describeAsync(t *testing.T, client livedumpv1.FleetServiceClient, req *livedumpv1.DescribeAgentRequest) <-chan *livedumpv1.DescribeAgentResponse {
	done := make(chan *livedumpv1.DescribeAgentResponse, 1)
	go func() {
		resp, err := client.DescribeAgent(context.Background(), req)
		if err != nil {
			t.Errorf("DescribeAgent: %v", err)
		}
		done <- resp
	}()
	return done
}

// TestAttacker4_ViewerCannotReadAgentLog: a viewer asks for a machine's
// log; refused before any directive leaves, and audited. The rest of the
// description stays a viewer's to read.
func TestAttacker4_ViewerCannotReadAgentLog(t *testing.T) {
	c := harness.StartController(t, nil)
	ra := c.EnrollRaw(t, "LAB-07", map[string]string{"site": "lab"})
	st := evConnect(t, ra, "LAB-07")
	viewer := c.Fleet(t, pki.RoleViewer)
	_, err := viewer.DescribeAgent(context.Background(), &livedumpv1.DescribeAgentRequest{AgentId: ra.ID, LogLines: 50})
	harness.WantCode(t, err, codes.PermissionDenied, "needs role operator")
	time.Sleep(200 * time.Millisecond)
	if d := logDirectives(st); len(d) != 0 {
		t.Fatalf("the agent received %d log directives from a viewer's call", len(d))
	}
	es := rolesAudit(t, c, viewerActor, "DescribeAgent")
	if len(es) != 1 || !strings.HasPrefix(es[0].Outcome, "permissiondenied") || es[0].Target != ra.ID {
		t.Fatalf("audit of the refused log read: %+v", es)
	}
	resp, err := viewer.DescribeAgent(context.Background(), &livedumpv1.DescribeAgentRequest{AgentId: ra.ID})
	if err != nil {
		t.Fatalf("viewer without the log: %v", err)
	}
	if resp.GetAgent().GetHostname() != "LAB-07" || resp.GetLog() != nil {
		t.Fatalf("viewer's description: %v", resp)
	}
}

// TestAttacker3_HugeLogTailIsClamped: an operator asks for a billion
// lines and a year's wait; the wait is refused, the lines are clamped to
// 200 before the directive leaves, and an agent sending more than asked
// is refused.
func TestAttacker3_HugeLogTailIsClamped(t *testing.T) {
	c := harness.StartController(t, nil)
	ra := c.EnrollRaw(t, "LAB-07", map[string]string{"site": "lab"})
	st := evConnect(t, ra, "LAB-07")
	op := c.Fleet(t, pki.RoleOperator)
	_, err := op.DescribeAgent(context.Background(), &livedumpv1.DescribeAgentRequest{AgentId: ra.ID, LogLines: 1, LogWait: durationpb.New(365 * 24 * time.Hour)})
	harness.WantCode(t, err, codes.InvalidArgument, "log_wait")
	_, err = op.DescribeAgent(context.Background(), &livedumpv1.DescribeAgentRequest{AgentId: ra.ID, LogLines: -1})
	harness.WantCode(t, err, codes.InvalidArgument, "log_lines")

	done := describeAsync(t, op, &livedumpv1.DescribeAgentRequest{AgentId: ra.ID, LogLines: 1 << 30, Limit: 1 << 30, LogWait: durationpb.New(5 * time.Second)})
	harness.Eventually(t, 5*time.Second, "the agent receives a log directive", func() bool { return len(logDirectives(st)) == 1 })
	d := logDirectives(st)[0]
	if got := d.GetAgentLog(); got.GetMaxLines() != api.MaxLogLines || got.GetMaxBytes() > api.MaxLogBytes {
		t.Fatalf("directive asks for %d lines, %d bytes; want at most %d, %d", got.GetMaxLines(), got.GetMaxBytes(), api.MaxLogLines, api.MaxLogBytes)
	}
	// The agent answers with more lines than it was asked for.
	rep := &livedumpv1.AgentLogReport{DirectiveId: d.GetId()}
	for i := range api.MaxLogLines + 50 {
		rep.Lines = append(rep.Lines, fmt.Sprintf("line %d", i))
	}
	st.send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_AgentLogReport{AgentLogReport: rep}})
	resp := <-done
	if n := len(resp.GetLog().GetReport().GetLines()); n != 0 || !strings.Contains(resp.GetLog().GetReport().GetError(), "refused") {
		t.Fatalf("an answer over the bounds reached the operator: %d lines, log %v", n, resp.GetLog().GetError())
	}
}

// TestAttacker2_OversizedOrForgedAgentLogRefused: a stolen agent identity
// (B) answers another machine's (A's) log directive with a log of its
// making, answers a directive nobody sent, and answers its own with 1 MiB
// of text. Nothing of it reaches an operator: A's describe says A did not
// answer, B's says B's answer was refused; each is audited against B.
func TestAttacker2_OversizedOrForgedAgentLogRefused(t *testing.T) {
	c := harness.StartController(t, nil)
	victim := c.EnrollRaw(t, "LAB-VICTIM", map[string]string{"site": "lab"})
	thief := c.EnrollRaw(t, "LAB-THIEF", map[string]string{"site": "lab"})
	vs := evConnect(t, victim, "LAB-VICTIM")
	ts := evConnect(t, thief, "LAB-THIEF")
	op := c.Fleet(t, pki.RoleOperator)

	victimDone := describeAsync(t, op, &livedumpv1.DescribeAgentRequest{AgentId: victim.ID, LogLines: 10, LogWait: durationpb.New(3 * time.Second)})
	thiefDone := describeAsync(t, op, &livedumpv1.DescribeAgentRequest{AgentId: thief.ID, LogLines: 10, LogWait: durationpb.New(3 * time.Second)})
	harness.Eventually(t, 5*time.Second, "both agents receive a log directive", func() bool {
		return len(logDirectives(vs)) == 1 && len(logDirectives(ts)) == 1
	})
	send := func(r *livedumpv1.AgentLogReport) {
		ts.send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_AgentLogReport{AgentLogReport: r}})
	}
	// 1. The victim's directive, answered by the thief.
	send(&livedumpv1.AgentLogReport{DirectiveId: logDirectives(vs)[0].GetId(), Lines: []string{"forged: all is well"}})
	// 2. A directive nobody sent.
	send(&livedumpv1.AgentLogReport{DirectiveId: "0123456789abcdef01234567", Lines: []string{"forged"}})
	// 3. Its own directive, with 1 MiB of text in few lines.
	send(&livedumpv1.AgentLogReport{DirectiveId: logDirectives(ts)[0].GetId(), Lines: []string{strings.Repeat("x", 1<<20)}})

	if r := <-victimDone; r.GetLog().GetReport() != nil || !strings.Contains(r.GetLog().GetError(), "no answer within") {
		t.Errorf("victim's log carries what it never sent: %v", r.GetLog())
	}
	if r := <-thiefDone; len(r.GetLog().GetReport().GetLines()) != 0 || !strings.Contains(r.GetLog().GetReport().GetError(), "refused") {
		t.Errorf("thief's oversized log reached the operator: error %q, %d lines", r.GetLog().GetReport().GetError(), len(r.GetLog().GetReport().GetLines()))
	}
	var ignored, invalid int
	for _, e := range rolesAudit(t, c, "agent/"+thief.ID, "AgentLogReport") {
		switch {
		case strings.HasPrefix(e.Outcome, "ignored"):
			ignored++
		case strings.HasPrefix(e.Outcome, "invalid_argument"):
			invalid++
		}
		if len(e.Outcome) > 600 {
			t.Errorf("audit outcome of %d bytes", len(e.Outcome))
		}
	}
	if ignored != 2 || invalid != 1 {
		t.Errorf("audit: %d ignored, %d invalid; want 2 and 1", ignored, invalid)
	}
}

// TestAttacker2_StolenAgentCannotDescribe: an agent's certificate calls
// DescribeAgent on the operator service; refused and audited.
func TestAttacker2_StolenAgentCannotDescribe(t *testing.T) {
	c := harness.StartController(t, nil)
	victim := c.EnrollRaw(t, "LAB-VICTIM", nil)
	thief := c.EnrollRaw(t, "LAB-THIEF", nil)
	_, err := livedumpv1.NewFleetServiceClient(thief.Conn).DescribeAgent(context.Background(), &livedumpv1.DescribeAgentRequest{AgentId: victim.ID, LogLines: 10})
	harness.WantCode(t, err, codes.PermissionDenied, "operators")
	if es := rolesAudit(t, c, "agent/"+thief.ID, "DescribeAgent"); len(es) != 1 || es[0].Outcome == "ok" {
		t.Fatalf("audit of the stolen identity's call: %+v", es)
	}
}
