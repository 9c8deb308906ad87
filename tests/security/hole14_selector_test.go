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

	time.Sleep(200 * time.Millisecond)
	if d := st.directives(); len(d) != 0 {
		t.Fatalf("the agent received %d provisioning directives: %v", len(d), d)
	}
	if es := rolesAudit(t, c, "operator/operator/test-operator", "ApplyProvision"); len(es) != 1 || es[0].Outcome == "ok" {
		t.Fatalf("audit of the refused apply: %+v", es)
	}
}
