package security

import (
	"context"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/harness"
)

// getDump downloads a dump as an admin and returns the first error.
func getDump(t testing.TB, c *harness.Controller, id string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.Fleet(t, pki.RoleAdmin).GetDump(ctx, &livedumpv1.GetDumpRequest{Id: id})
	if err != nil {
		return err
	}
	for {
		if _, err := s.Recv(); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

// TestHole06_AgentCannotMarkADumpUploaded: a stolen agent identity reports
// a dump as uploaded with the SHA-256 of content it never sent (another
// machine's dump), directly in a DumpReport and through an upload header
// that claims the content is already stored. Before, `dumps get` then
// served the other machine's dump as this one, "verified". Now only the
// controller's verified upload path marks a dump uploaded, and a dump's
// SHA-256 and size never change once reported.
func TestHole06_AgentCannotMarkADumpUploaded(t *testing.T) {
	c := harness.StartController(t, nil)
	victim := c.EnrollRaw(t, "VICTIM-01", nil)
	thief := c.EnrollRaw(t, "THIEF-01", nil)
	raw, sum := dumpContent(2 << 20)
	uploadAll(t, victim, "7777000000000001", "", raw)

	// 1. A DumpReport that says "uploaded".
	s := connect(t, thief, harness.Inventory("THIEF-01"))
	forged := dumpMsg("bad0000000000001", "", int64(len(raw)), sum)
	forged.State = livedumpv1.DumpState_DUMP_STATE_UPLOADED
	report(t, c, s, forged)
	notUploaded(t, c, "bad0000000000001")
	if err := getDump(t, c, "bad0000000000001"); status.Code(err) != codes.FailedPrecondition && status.Code(err) != codes.NotFound {
		t.Fatalf("GetDump of the forged dump: %v, want FailedPrecondition or NotFound (it served content)", err)
	}

	// 2. An upload header for content already stored, and no content.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := upload(ctx, thief.Client(), dumpMsg("bad0000000000002", "", int64(len(raw)), sum), nil)
	if err == nil && resp.GetState() == livedumpv1.DumpState_DUMP_STATE_UPLOADED {
		t.Fatalf("upload without content accepted as %v (%q)", resp.GetState(), resp.GetDetail())
	}
	harness.WantCode(t, err, codes.InvalidArgument, "dump.size")
	notUploaded(t, c, "bad0000000000002")
	if err := getDump(t, c, "bad0000000000002"); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("GetDump of the unsent dump: %v, want FailedPrecondition", err)
	}

	// 3. A dump's SHA-256 and size, once reported, stay.
	own, ownSum := dumpContent(1 << 20)
	d := dumpMsg("bad0000000000003", "", int64(len(own)), ownSum)
	d.State = livedumpv1.DumpState_DUMP_STATE_HASHED
	report(t, c, s, d)
	changed := dumpMsg("bad0000000000003", "", int64(len(raw)), sum)
	changed.State = livedumpv1.DumpState_DUMP_STATE_HASHED
	report(t, c, s, changed)
	got, err := c.Store().GetDump(ctx, "bad0000000000003")
	if err != nil || got.SHA256 != ownSum || got.Size != int64(len(own)) {
		t.Fatalf("after a second report: %+v %v, want sha256 %s and size %d kept", got, err, ownSum, len(own))
	}
	_, err = upload(ctx, thief.Client(), changed, zstdFrames(t, raw, 1<<20))
	harness.WantCode(t, err, codes.InvalidArgument, "dump.sha256")
	if got, _ := c.Store().GetDump(ctx, "bad0000000000003"); got.SHA256 != ownSum || got.State == "uploaded" {
		t.Fatalf("after a header with another hash: %+v", got)
	}
	// The victim's own dump is untouched and still served.
	if err := getDump(t, c, "7777000000000001"); err != nil {
		t.Fatalf("the victim's dump: %v", err)
	}
	if !auditHas(t, c, thief.ID, "DumpReport", "uploaded") {
		t.Error("the forged report is not audited")
	}
}
