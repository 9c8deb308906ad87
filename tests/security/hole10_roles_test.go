package security

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/livedump/livedump/controller/blobstore"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/harness"
)

// rolesAudit returns the audit entries of actor for action (a method's short
// name), newest first.
func rolesAudit(t testing.TB, c *harness.Controller, actor, action string) []store.AuditEntry {
	t.Helper()
	es, err := c.Store().ListAudit(context.Background(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var out []store.AuditEntry
	for _, e := range es {
		if e.Actor == actor && (e.Action == action || strings.HasSuffix(e.Action, "/"+action)) {
			out = append(out, e)
		}
	}
	return out
}

const viewerActor = "operator/viewer/test-viewer"

// TestHole10_ViewerCannotDownloadDumps: a viewer asks for a kernel memory
// dump's bytes; the call is refused before a byte leaves, and the refusal
// is audited.
func TestHole10_ViewerCannotDownloadDumps(t *testing.T) {
	c := harness.StartController(t, nil)
	ctx := context.Background()
	agent := c.EnrollRaw(t, "LAB-07", map[string]string{"site": "lab"})

	// A dump on the controller, as an upload would have left it.
	blobs, err := blobstore.New(filepath.Join(c.DataDir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	secret := "kernel memory: lsass secrets"
	sum, size, err := blobs.Put(ctx, strings.NewReader(secret), "", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	const dumpID = "0123456789abcdef"
	now := time.Now().UTC()
	if err := c.Store().PutDump(ctx, store.Dump{ID: dumpID, AgentID: agent.ID, FileName: "DTRACE-1.dmp", Size: size, SHA256: sum,
		State: "reported", Written: now, Updated: now}); err != nil {
		t.Fatal(err)
	}
	if err := c.Store().SetDumpProgress(ctx, dumpID, size, size, "uploaded", "", now); err != nil {
		t.Fatal(err)
	}

	viewer := c.Fleet(t, pki.RoleViewer)
	st, err := viewer.GetDump(ctx, &livedumpv1.GetDumpRequest{Id: dumpID})
	if err != nil {
		t.Fatal(err)
	}
	var got int
	for {
		m, rerr := st.Recv()
		if rerr != nil {
			err = rerr
			break
		}
		got += len(m.GetChunk())
	}
	if got != 0 {
		t.Fatalf("viewer received %d bytes of a kernel memory dump", got)
	}
	harness.WantCode(t, err, codes.PermissionDenied, "operator")
	if len(rolesAudit(t, c, viewerActor, "GetDump")) != 1 {
		t.Errorf("the refused GetDump of the viewer is not audited")
	}
	_, err = viewer.PullDump(ctx, &livedumpv1.PullDumpRequest{Id: dumpID})
	harness.WantCode(t, err, codes.PermissionDenied, "operator")

	// An operator still may: the refusal is the role, not the dump.
	st, err = c.Fleet(t, pki.RoleOperator).GetDump(ctx, &livedumpv1.GetDumpRequest{Id: dumpID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); status.Code(err) == codes.PermissionDenied {
		t.Fatalf("operator GetDump: %v", err)
	}
}

// TestHole10_ViewerCannotPlanProvision: a viewer runs a fleet-wide
// provisioning plan (which makes every agent inspect its machine and report
// its configuration); it is refused, no agent is asked, and the attempt is
// in the audit log. An operator's plan is audited too.
func TestHole10_ViewerCannotPlanProvision(t *testing.T) {
	c := harness.StartController(t, nil)
	ctx := context.Background()
	agent := c.EnrollRaw(t, "LAB-07", map[string]string{"site": "lab"})
	st := evConnect(t, agent, "LAB-07")

	_, err := c.Fleet(t, pki.RoleViewer).PlanProvision(ctx, &livedumpv1.PlanProvisionRequest{Selector: "site=lab", Wait: durationpb.New(time.Second)})
	harness.WantCode(t, err, codes.PermissionDenied, "operator")
	time.Sleep(200 * time.Millisecond)
	if d := st.directives(); len(d) != 0 {
		t.Fatalf("the agent received %d directives from a viewer's plan", len(d))
	}
	es := rolesAudit(t, c, viewerActor, "PlanProvision")
	if len(es) != 1 || !strings.Contains(es[0].Outcome, "permission") {
		t.Fatalf("audit of the viewer's plan: %+v", es)
	}

	if _, err := c.Fleet(t, pki.RoleOperator).PlanProvision(ctx, &livedumpv1.PlanProvisionRequest{Selector: "site=lab", Wait: durationpb.New(time.Second)}); err != nil {
		t.Fatal(err)
	}
	if es := rolesAudit(t, c, "operator/operator/test-operator", "PlanProvision"); len(es) != 1 {
		t.Fatalf("the operator's plan is not audited: %+v", es)
	}
}

// TestHole10_RefusedReadsAudited: a viewer tries an admin-only read (the
// audit log itself); the refusal is audited with bounded details.
func TestHole10_RefusedReadsAudited(t *testing.T) {
	c := harness.StartController(t, nil)
	_, err := c.Fleet(t, pki.RoleViewer).ListAudit(context.Background(), &livedumpv1.ListAuditRequest{Limit: 10})
	harness.WantCode(t, err, codes.PermissionDenied, "admin")
	es := rolesAudit(t, c, viewerActor, "ListAudit")
	if len(es) != 1 {
		t.Fatalf("%d audit entries for the viewer's refused ListAudit, want 1", len(es))
	}
	if !strings.Contains(es[0].Outcome, "permission") || len(es[0].Details) > 1024 {
		t.Fatalf("audit entry: %+v", es[0])
	}
}
