package security

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/livedump/livedump/controller/store"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/harness"
)

// TestHole09_OnlyTargetsSpendACapturesDumpQuota: capture C targets agent A
// with --max-dumps 1. A stolen identity B, not a target, uploads and reports
// dumps against C. Before, B's dump took C's only slot and A's dump was
// kept hash-only. Now B is refused and A's dump is admitted.
func TestHole09_OnlyTargetsSpendACapturesDumpQuota(t *testing.T) {
	c := harness.StartController(t, nil)
	a := c.EnrollRaw(t, "TARGET-01", nil)
	b := c.EnrollRaw(t, "THIEF-01", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	now := time.Now().UTC()
	const capture = "cafe0000000000000000000000000001"
	if err := c.Store().CreateCapture(ctx, store.Capture{ID: capture, Spec: `{"action":"CAPTURE_ACTION_DUMP","maxDumps":1}`,
		State: "active", Created: now, Expires: now.Add(time.Hour), CreatedBy: "operator/operator/test"},
		[]store.CaptureTarget{{CaptureID: capture, AgentID: a.ID, State: "armed", Updated: now}}); err != nil {
		t.Fatal(err)
	}

	// B uploads against C.
	raw, sum := dumpContent(1 << 20)
	resp, err := upload(ctx, b.Client(), dumpMsg("9999000000000001", capture, int64(len(raw)), sum), zstdFrames(t, raw, 1<<20))
	if err == nil {
		t.Fatalf("a non-target's upload against the capture answered %v (%q)", resp.GetState(), resp.GetDetail())
	}
	harness.WantCode(t, err, codes.PermissionDenied, "not a target")
	// And reports against C, and against a capture that does not exist.
	s := connect(t, b, harness.Inventory("THIEF-01"))
	report(t, c, s, dumpMsg("9999000000000002", capture, int64(len(raw)), sum),
		dumpMsg("9999000000000003", "cafe00000000000000000000000000ff", int64(len(raw)), sum))
	for _, id := range []string{"9999000000000001", "9999000000000002", "9999000000000003"} {
		if d, err := c.Store().GetDump(ctx, id); err == nil {
			t.Errorf("dump %s of a non-target recorded: %+v", id, d)
		}
	}

	// A, the target, still gets C's one dump.
	own, ownSum := dumpContent(1 << 20)
	resp, err = upload(ctx, a.Client(), dumpMsg("1111000000000001", capture, int64(len(own)), ownSum), zstdFrames(t, own, 1<<20))
	if err != nil || resp.GetState() != livedumpv1.DumpState_DUMP_STATE_UPLOADED {
		t.Fatalf("the target's dump: %v %v, want uploaded (the capture's quota was spent by another agent)", resp, err)
	}
	if !auditHas(t, c, b.ID, "UploadDump", "not a target") {
		t.Error("the refused upload is not audited")
	}
	if !auditHas(t, c, b.ID, "DumpReport", "not a target") {
		t.Error("the refused report is not audited")
	}
}
