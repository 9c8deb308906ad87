package integration

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// TestCapturePreviewUsesReportedProvisioning: the preview and the refusal
// of a capture that can catch nothing rest on the provisioning states the
// agents themselves report: after provisioning the VDI machines, a dry run
// over the lab counts them ready and the unprovisioned kiosk apart, and a
// capture on the kiosk alone is refused unless forced.
func TestCapturePreviewUsesReportedProvisioning(t *testing.T) {
	_, _, op := provisionedLab(t, controllerOpts{})
	ctx := context.Background()
	spec := func(sel string) *livedumpv1.CaptureSpec {
		return &livedumpv1.CaptureSpec{Selector: sel, Processes: []string{"ms-teams.exe"}, Statuses: []string{"STATUS_INVALID_PARAMETER"}}
	}
	dry, err := op.CreateCapture(ctx, &livedumpv1.CreateCaptureRequest{Spec: spec("site=lab"), DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	pv := dry.GetPreview()
	if dry.GetCapture() != nil || pv.GetMatched() != 3 || pv.GetReady() != 2 || pv.GetRefused() != "" ||
		pv.GetProvisionStates()["ready"] != 2 || pv.GetProvisionStates()["not-provisioned"] != 1 {
		t.Fatalf("preview %v", pv)
	}
	for _, tg := range pv.GetTargets() {
		want := livedumpv1.ProvisionState_PROVISION_STATE_READY
		if tg.GetHostname() == "LAB-KIOSK-03" {
			want = livedumpv1.ProvisionState_PROVISION_STATE_NOT_PROVISIONED
		}
		if tg.GetProvisionState() != want {
			t.Errorf("%s: %v, want %v", tg.GetHostname(), tg.GetProvisionState(), want)
		}
	}
	_, err = op.CreateCapture(ctx, &livedumpv1.CreateCaptureRequest{Spec: spec("role=kiosk")})
	wantCode(t, err, codes.FailedPrecondition, `selector "role=kiosk" matches 1 machine and it is not provisioned (1 not-provisioned)`)
	list, err := op.ListCaptures(ctx, &livedumpv1.ListCapturesRequest{})
	if err != nil || len(list.GetCaptures()) != 0 {
		t.Fatalf("captures stored after a dry run and a refusal: %d (%v)", len(list.GetCaptures()), err)
	}
	forced, err := op.CreateCapture(ctx, &livedumpv1.CreateCaptureRequest{Spec: spec("role=kiosk"), Force: true})
	if err != nil || len(forced.GetCapture().GetTargets()) != 1 || forced.GetPreview().GetReady() != 0 {
		t.Fatalf("forced: %v, %v", forced, err)
	}
}
