package security

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/harness"
)

// TestAttacker4_ViewerCannotDryRunACapture: a viewer asks for a capture
// preview (which matches machines and renders a probe); it is refused like
// a create, audited, and nothing is stored.
func TestAttacker4_ViewerCannotDryRunACapture(t *testing.T) {
	c := harness.StartController(t, nil)
	ctx := context.Background()
	c.EnrollRaw(t, "LAB-16", map[string]string{"site": "lab"})
	viewer := c.Fleet(t, pki.RoleViewer)
	_, err := viewer.CreateCapture(ctx, &livedumpv1.CreateCaptureRequest{DryRun: true, Force: true, Spec: &livedumpv1.CaptureSpec{
		Selector: "site=lab", Processes: []string{"ms-teams.exe"}, Statuses: []string{"STATUS_INVALID_PARAMETER"}}})
	harness.WantCode(t, err, codes.PermissionDenied, "")
	if es := rolesAudit(t, c, viewerActor, "CreateCapture"); len(es) != 1 || es[0].Outcome == "ok" {
		t.Fatalf("audit of the refused dry run: %+v", es)
	}
	if cs, err := c.Store().ListCaptures(ctx, ""); err != nil || len(cs) != 0 {
		t.Fatalf("captures stored: %d (%v)", len(cs), err)
	}
}

// TestAttacker3_DryRunAndForceSkipNoCheck: an operator uses dry_run to try
// what create refuses, and force to push past the checks: a raw script
// (admin only) and a process with a second line of D are refused either
// way; a dry run stores no capture, only its audit entry, which says it
// was a dry run.
func TestAttacker3_DryRunAndForceSkipNoCheck(t *testing.T) {
	c := harness.StartController(t, nil)
	ctx := context.Background()
	c.EnrollRaw(t, "LAB-16", map[string]string{"site": "lab"})
	op := c.Fleet(t, pki.RoleOperator)
	for _, req := range []*livedumpv1.CreateCaptureRequest{
		{DryRun: true, Spec: &livedumpv1.CaptureSpec{Selector: "site=lab", Script: "BEGIN { lkd(0); }"}},
		{Force: true, Spec: &livedumpv1.CaptureSpec{Selector: "site=lab", Script: "BEGIN { lkd(0); }"}},
		{DryRun: true, Spec: &livedumpv1.CaptureSpec{Selector: "site=lab", Processes: []string{"ms-teams.exe\nBEGIN"}, Statuses: []string{"STATUS_INVALID_PARAMETER"}}},
		{Force: true, Spec: &livedumpv1.CaptureSpec{Selector: "site=lab", Processes: []string{"ms-teams.exe\nBEGIN"}, Statuses: []string{"STATUS_INVALID_PARAMETER"}}},
	} {
		_, err := op.CreateCapture(ctx, req)
		harness.WantCode(t, err, codes.InvalidArgument, "")
	}
	resp, err := op.CreateCapture(ctx, &livedumpv1.CreateCaptureRequest{DryRun: true, Spec: &livedumpv1.CaptureSpec{
		Selector: "site=lab", Processes: []string{"ms-teams.exe"}, Statuses: []string{"STATUS_INVALID_PARAMETER"}}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetCapture() != nil || resp.GetPreview().GetMatched() != 1 || resp.GetPreview().GetRefused() == "" {
		t.Fatalf("dry run answered %v", resp)
	}
	if cs, err := c.Store().ListCaptures(ctx, ""); err != nil || len(cs) != 0 {
		t.Fatalf("captures stored: %d (%v)", len(cs), err)
	}
	es := rolesAudit(t, c, "operator/operator/test-operator", "CreateCapture")
	if len(es) != 5 {
		t.Fatalf("%d audit entries, want 5: %+v", len(es), es)
	}
	last := es[0]
	for _, e := range es {
		if e.ID > last.ID {
			last = e
		}
	}
	if last.Outcome != "ok" || last.Target != "dry-run" || !strings.Contains(last.Details, `"dry_run":true`) {
		t.Fatalf("the dry run's audit entry: %+v", last)
	}
}
