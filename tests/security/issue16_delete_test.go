package security

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/livedump/livedump/controller/blobstore"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/harness"
)

const (
	delDumpID    = "0123456789abcdef"
	delCaptureID = "cap-ended-1"
)

// deleteFixture puts on the controller what an upload and a finished
// capture would have left: one uploaded dump (content in the blob store)
// of an ended capture with one event. It returns the blob store and the
// dump's hash.
func deleteFixture(t *testing.T, c *harness.Controller, agentID string) (*blobstore.Store, string) {
	t.Helper()
	ctx := context.Background()
	blobs, err := blobstore.New(filepath.Join(c.DataDir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	sum, size, err := blobs.Put(ctx, strings.NewReader("kernel memory of LAB-07"), "", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if err := c.Store().CreateCapture(ctx, store.Capture{ID: delCaptureID, Spec: "{}", State: "done", Created: now.Add(-time.Hour), Expires: now},
		[]store.CaptureTarget{{AgentID: agentID, State: "armed"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Store().InsertEvents(ctx, []store.Event{{ID: "ev-1", CaptureID: delCaptureID, AgentID: agentID, Time: now, Process: "p.exe", Probe: "x", User: "[]", Kernel: "[]"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Store().PutDump(ctx, store.Dump{ID: delDumpID, AgentID: agentID, CaptureID: delCaptureID, FileName: "DTRACE-1.dmp", Size: size, SHA256: sum,
		State: "hashed", Written: now, Updated: now}); err != nil {
		t.Fatal(err)
	}
	if err := c.Store().SetDumpProgress(ctx, delDumpID, size, size, store.DumpUploaded, "", now); err != nil {
		t.Fatal(err)
	}
	return blobs, sum
}

// nothingDeleted fails unless the dump (row and content), the capture and
// its event are all still there.
func nothingDeleted(t *testing.T, c *harness.Controller, blobs *blobstore.Store, sum string) {
	t.Helper()
	ctx := context.Background()
	if _, err := c.Store().GetDump(ctx, delDumpID); err != nil {
		t.Fatalf("dump row gone: %v", err)
	}
	if ok, _ := blobs.Has(ctx, sum); !ok {
		t.Fatal("dump content gone")
	}
	if _, err := c.Store().GetCapture(ctx, delCaptureID); err != nil {
		t.Fatalf("capture gone: %v", err)
	}
	if _, err := c.Store().EventSeq(ctx, "ev-1"); err != nil {
		t.Fatalf("event gone: %v", err)
	}
}

// refusedDeletes makes both delete calls through fleet and checks the
// refusals, that they are audited for actor, and that nothing went.
func refusedDeletes(t *testing.T, c *harness.Controller, fleet livedumpv1.FleetServiceClient, actor, substr string, blobs *blobstore.Store, sum string) {
	t.Helper()
	ctx := context.Background()
	_, err := fleet.DeleteDump(ctx, &livedumpv1.DeleteDumpRequest{Id: delDumpID})
	harness.WantCode(t, err, codes.PermissionDenied, substr)
	_, err = fleet.DeleteCapture(ctx, &livedumpv1.DeleteCaptureRequest{Id: delCaptureID})
	harness.WantCode(t, err, codes.PermissionDenied, substr)
	for _, action := range []string{"DeleteDump", "DeleteCapture"} {
		es := rolesAudit(t, c, actor, action)
		if len(es) != 1 || !strings.Contains(es[0].Outcome, "permission") {
			t.Errorf("audit of %s's refused %s: %+v", actor, action, es)
		}
	}
	nothingDeleted(t, c, blobs, sum)
}

// TestAttacker4_ViewerCannotDelete: a viewer deletes a dump and a capture
// to erase evidence; both are refused and audited, nothing is deleted.
func TestAttacker4_ViewerCannotDelete(t *testing.T) {
	c := harness.StartController(t, nil)
	agent := c.EnrollRaw(t, "LAB-07", nil)
	blobs, sum := deleteFixture(t, c, agent.ID)
	refusedDeletes(t, c, c.Fleet(t, pki.RoleViewer), viewerActor, "admin", blobs, sum)
}

// TestAttacker3_OperatorCannotDelete: an operator (who may create and
// cancel captures) deletes a dump and a capture; both need admin, are
// refused and audited, nothing is deleted.
func TestAttacker3_OperatorCannotDelete(t *testing.T) {
	c := harness.StartController(t, nil)
	agent := c.EnrollRaw(t, "LAB-07", nil)
	blobs, sum := deleteFixture(t, c, agent.ID)
	refusedDeletes(t, c, c.Fleet(t, pki.RoleOperator), "operator/operator/test-operator", "admin", blobs, sum)
}

// TestAttacker2_StolenAgentCannotDelete: with a stolen agent key the
// attacker calls the operator service to delete the dump its machine
// uploaded; refused (agents may not call FleetService), audited, nothing
// is deleted.
func TestAttacker2_StolenAgentCannotDelete(t *testing.T) {
	c := harness.StartController(t, nil)
	agent := c.EnrollRaw(t, "LAB-07", nil)
	blobs, sum := deleteFixture(t, c, agent.ID)
	fleet := livedumpv1.NewFleetServiceClient(agent.Conn)
	ctx := context.Background()
	_, err := fleet.DeleteDump(ctx, &livedumpv1.DeleteDumpRequest{Id: delDumpID})
	harness.WantCode(t, err, codes.PermissionDenied, "operator")
	_, err = fleet.DeleteCapture(ctx, &livedumpv1.DeleteCaptureRequest{Id: delCaptureID})
	harness.WantCode(t, err, codes.PermissionDenied, "operator")
	es, err := c.Store().ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	for _, e := range es {
		if strings.Contains(e.Actor, agent.ID) && strings.Contains(e.Action, "Delete") && strings.Contains(e.Outcome, "permission") {
			refused++
		}
	}
	if refused != 2 {
		t.Errorf("%d audited refusals of the stolen agent identity's deletes, want 2", refused)
	}
	nothingDeleted(t, c, blobs, sum)
}

// TestAdminDeleteRules is the control: an admin's deletes work and are
// audited, but never take a dump being downloaded or an active capture,
// and bad IDs are refused before anything is looked up.
func TestAdminDeleteRules(t *testing.T) {
	c := harness.StartController(t, nil)
	ctx := context.Background()
	agent := c.EnrollRaw(t, "LAB-07", nil)
	blobs, sum := deleteFixture(t, c, agent.ID)
	admin := c.Fleet(t, pki.RoleAdmin)

	_, err := admin.DeleteDump(ctx, &livedumpv1.DeleteDumpRequest{Id: "../../etc"})
	harness.WantCode(t, err, codes.InvalidArgument, "not a dump ID")
	_, err = admin.DeleteCapture(ctx, &livedumpv1.DeleteCaptureRequest{Id: strings.Repeat("a", 65)})
	harness.WantCode(t, err, codes.InvalidArgument, "not a capture ID")

	// Another dump is being downloaded: its delete is refused and the
	// download reads it whole.
	const other = "fedcba9876543210"
	content := "another machine's kernel memory"
	otherSum, size, err := blobs.Put(ctx, strings.NewReader(content), "", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if err := c.Store().PutDump(ctx, store.Dump{ID: other, AgentID: agent.ID, FileName: "DTRACE-2.dmp", Size: size, SHA256: otherSum, State: "hashed", Written: now, Updated: now}); err != nil {
		t.Fatal(err)
	}
	if err := c.Store().SetDumpProgress(ctx, other, size, size, store.DumpUploaded, "", now); err != nil {
		t.Fatal(err)
	}
	st, err := c.Fleet(t, pki.RoleOperator).GetDump(ctx, &livedumpv1.GetDumpRequest{Id: other})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil { // the dump's description: the download is open
		t.Fatal(err)
	}
	_, err = admin.DeleteDump(ctx, &livedumpv1.DeleteDumpRequest{Id: other})
	harness.WantCode(t, err, codes.FailedPrecondition, "being downloaded")
	got := 0
	for {
		m, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("download cut by a delete: %v", err)
		}
		got += len(m.GetChunk())
	}
	if got != len(content) {
		t.Fatalf("download read %d bytes", got)
	}
	if ok, _ := blobs.Has(ctx, otherSum); !ok {
		t.Fatal("the downloaded dump's content is gone")
	}

	// An active capture is refused: cancel first.
	if err := c.Store().CreateCapture(ctx, store.Capture{ID: "cap-live-1", Spec: "{}", State: "active", Created: now, Expires: now.Add(time.Hour)}, nil); err != nil {
		t.Fatal(err)
	}
	_, err = admin.DeleteCapture(ctx, &livedumpv1.DeleteCaptureRequest{Id: "cap-live-1"})
	harness.WantCode(t, err, codes.FailedPrecondition, "cancel it first")

	// The ended capture goes with its dump, content and event.
	resp, err := admin.DeleteCapture(ctx, &livedumpv1.DeleteCaptureRequest{Id: delCaptureID})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetDumps() != 1 || resp.GetEvents() != 1 {
		t.Fatalf("DeleteCapture = %v", resp)
	}
	if ok, _ := blobs.Has(ctx, sum); ok {
		t.Fatal("the dump's content survived its capture's delete")
	}
	_, err = admin.DeleteDump(ctx, &livedumpv1.DeleteDumpRequest{Id: delDumpID})
	harness.WantCode(t, err, codes.NotFound, "not found")
	for action, want := range map[string]int{"DeleteCapture": 3, "DeleteDump": 3} {
		if es := rolesAudit(t, c, "operator/admin/test-admin", action); len(es) != want {
			t.Errorf("%d audited %s calls of the admin, want %d", len(es), action, want)
		}
	}
}
