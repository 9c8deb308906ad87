package security

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/harness"
)

// TestHole14_EmptySelectorRefused: an operator provisions with an empty
// selector, which would mean every agent of the fleet; each call is refused
// naming the selector, and no agent receives a directive.
func TestHole14_EmptySelectorRefused(t *testing.T) {
	c := harness.StartController(t, nil)
	ctx := context.Background()
	agent := c.EnrollRaw(t, "LAB-07", map[string]string{"site": "lab"})
	st := evConnect(t, agent, "LAB-07")
	op := c.Fleet(t, pki.RoleOperator)
	wait := durationpb.New(time.Second)

	_, err := op.ApplyProvision(ctx, &livedumpv1.ApplyProvisionRequest{Selector: "", Wait: wait})
	harness.WantCode(t, err, codes.InvalidArgument, "selector")
	_, err = op.RevertProvision(ctx, &livedumpv1.RevertProvisionRequest{Selector: "", Wait: wait})
	harness.WantCode(t, err, codes.InvalidArgument, "selector")
	_, err = op.PlanProvision(ctx, &livedumpv1.PlanProvisionRequest{Selector: "", Wait: wait})
	harness.WantCode(t, err, codes.InvalidArgument, "selector")
	// A blank selector parses as "everything": it is refused as empty, by
	// every call that acts on machines.
	for _, blank := range []string{" ", "\t \n"} {
		_, err = op.ApplyProvision(ctx, &livedumpv1.ApplyProvisionRequest{Selector: blank, Wait: wait})
		harness.WantCode(t, err, codes.InvalidArgument, "selector")
		_, err = op.CheckAgents(ctx, &livedumpv1.CheckAgentsRequest{Selector: blank, Wait: wait})
		harness.WantCode(t, err, codes.InvalidArgument, "selector")
		_, err = op.CreateCapture(ctx, &livedumpv1.CreateCaptureRequest{Spec: &livedumpv1.CaptureSpec{Selector: blank,
			Processes: []string{"ms-teams.exe"}, Statuses: []string{"STATUS_INVALID_PARAMETER"}}})
		harness.WantCode(t, err, codes.InvalidArgument, "selector")
	}
	if cs, err := c.Store().ListCaptures(ctx, ""); err != nil || len(cs) != 0 {
		t.Fatalf("captures stored after refused calls: %d (%v)", len(cs), err)
	}

	time.Sleep(200 * time.Millisecond)
	if d := st.directives(); len(d) != 0 {
		t.Fatalf("the agent received %d provisioning directives: %v", len(d), d)
	}
	es := rolesAudit(t, c, "operator/operator/test-operator", "ApplyProvision")
	if len(es) != 3 {
		t.Fatalf("audit of the three refused applies (empty and two blank): %+v", es)
	}
	for _, e := range es {
		if e.Outcome == "ok" {
			t.Fatalf("an apply with an empty or blank selector is audited as ok: %+v", e)
		}
	}
}
