package security

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/harness"
)

// grpcLimit is gRPC's default message limit, which both the controller and
// livedumpctl keep: a response above it never reaches the caller.
const grpcLimit = 4 << 20

// maxLabels returns n user labels as large as the label rules allow: a
// 253-character DNS prefix, a 63-character name, a 63-character value.
func maxLabels(n int) map[string]string {
	prefix := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61)
	l := map[string]string{}
	for i := range n {
		name := fmt.Sprintf("k%03d", i) + strings.Repeat("x", 59)
		l[prefix+"/"+name] = fmt.Sprintf("v%03d", i) + strings.Repeat("y", 59)
	}
	return l
}

// pageLimit is the controller's page budget (1 MiB) with a little slack
// for the response's own fields.
const pageLimit = 1<<20 + 4<<10

// checkPage fails the test when one response is above the page budget (far
// under the gRPC limit, above which the client would not even receive it).
func checkPage(t *testing.T, what string, m proto.Message) {
	t.Helper()
	if n := proto.Size(m); n > pageLimit {
		t.Errorf("%s: one page is %d bytes; pages must stay under %d, far under the %d-byte message limit", what, n, pageLimit, grpcLimit)
	}
}

// TestHole07_ListsArePagedByBytes: a fleet whose agents carry the most and
// largest labels the rules allow, plus a large audit log, dump list, token
// list and a capture with thousands of targets. Unpaged, each of these
// responses passed gRPC's 4 MiB limit and the list failed for everyone;
// paged, every response stays near 1 MiB and the pages together hold every
// row exactly once.
func TestHole07_ListsArePagedByBytes(t *testing.T) {
	c := harness.StartController(t, nil)
	ctx := context.Background()
	st := c.Store()
	now := time.Now().UTC().Truncate(time.Millisecond)

	// Agents: about 25 KB each; 220 of them are over 5 MiB in one response.
	const agents = 220
	labels := maxLabels(64)
	for i := range agents {
		a := store.Agent{ID: fmt.Sprintf("%016x", 0xa000+i), Hostname: fmt.Sprintf("WS-%04d", i%150), OSBuild: "22631",
			FirstSeen: now, LastSeen: now, Labels: labels}
		if err := st.CreateAgent(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	// Audit entries with large details (a request's JSON), 5 MiB in all.
	const audits = 80
	details := `{"pad":"` + strings.Repeat("z", 64<<10) + `"}`
	for i := range audits {
		if _, err := st.AppendAudit(ctx, store.AuditEntry{Time: now.Add(-time.Duration(i%7) * time.Second), Actor: "operator/admin/x",
			Action: "FleetService/LabelAgent", Target: fmt.Sprint(i), Outcome: "ok", Details: details}); err != nil {
			t.Fatal(err)
		}
	}
	// Dumps with the longest detail an agent may report.
	const dumpCount = 1200
	for i := range dumpCount {
		if err := st.PutDump(ctx, store.Dump{ID: fmt.Sprintf("%016x", 0xd000+i), AgentID: fmt.Sprintf("%016x", 0xa000+i%agents),
			FileName: "DTRACE-1.dmp", State: "hash-only", Detail: strings.Repeat("d", 4096), Size: 1 << 30,
			Written: now.Add(-time.Duration(i%10) * time.Second), Updated: now}); err != nil {
			t.Fatal(err)
		}
	}
	// Tokens with the most and largest labels.
	const tokens = 200
	for i := range tokens {
		if err := st.CreateToken(ctx, store.Token{ID: fmt.Sprintf("tok%05d", i), SecretHash: make([]byte, 32), Uses: 1, UsesLeft: 1,
			Labels: labels, Created: now.Add(-time.Duration(i%5) * time.Second), Expires: now.Add(time.Hour), CreatedBy: "operator/admin/x"}); err != nil {
			t.Fatal(err)
		}
	}
	// A finished capture whose targets reported long failure details.
	const targetCount = 6000
	var targets []store.CaptureTarget
	for i := range targetCount {
		targets = append(targets, store.CaptureTarget{AgentID: fmt.Sprintf("%016x", 0x100000+i), State: "failed",
			Detail: strings.Repeat("f", 1000), Updated: now})
	}
	if err := st.CreateCapture(ctx, store.Capture{ID: "c-big", Spec: `{"selector":"site=lab"}`, State: "done", Created: now,
		Expires: now.Add(time.Hour), CreatedBy: "operator/operator/x", Statuses: "[]"}, targets); err != nil {
		t.Fatal(err)
	}

	viewer := c.Fleet(t, pki.RoleViewer)
	admin := c.Fleet(t, pki.RoleAdmin)

	t.Run("agents", func(t *testing.T) {
		seen := map[string]int{}
		err := listAgents(ctx, t, viewer, func(a *livedumpv1.Agent) { seen[a.GetId()]++ })
		if err != nil {
			t.Fatalf("viewer lists agents: %v", err)
		}
		if len(seen) != agents {
			t.Fatalf("listed %d agents, want %d", len(seen), agents)
		}
		for id, n := range seen {
			if n != 1 {
				t.Fatalf("agent %s listed %d times", id, n)
			}
		}
	})
	t.Run("agents by selector", func(t *testing.T) {
		// Matching agents spread over the whole fleet: every page goes on
		// where the previous one stopped reading.
		var got []string
		err := follow(t, "ListAgents", func(after string) (*livedumpv1.ListAgentsResponse, string, error) {
			resp, err := viewer.ListAgents(ctx, &livedumpv1.ListAgentsRequest{Selector: "hostname in (WS-0001,WS-0149)", After: after})
			for _, a := range resp.GetAgents() {
				got = append(got, a.GetHostname())
			}
			return resp, resp.GetNext(), err
		})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != "[WS-0001 WS-0001 WS-0149]" {
			t.Fatalf("selected %v", got)
		}
	})
	t.Run("forged page token", func(t *testing.T) {
		_, err := viewer.ListAgents(ctx, &livedumpv1.ListAgentsRequest{After: "not-a-token"})
		harness.WantCode(t, err, codes.InvalidArgument, "after")
		// A token of another list is refused too.
		resp, err := viewer.ListDumps(ctx, &livedumpv1.ListDumpsRequest{})
		if err != nil || resp.GetNext() == "" {
			t.Fatalf("ListDumps: next %q, %v", resp.GetNext(), err)
		}
		_, err = viewer.ListAgents(ctx, &livedumpv1.ListAgentsRequest{After: resp.GetNext()})
		harness.WantCode(t, err, codes.InvalidArgument, "not a page token of ListAgents")
		_, err = viewer.ListAgents(ctx, &livedumpv1.ListAgentsRequest{After: strings.Repeat("A", 10000)})
		harness.WantCode(t, err, codes.InvalidArgument, "after")
	})
	t.Run("audit", func(t *testing.T) {
		seen := map[int64]int{}
		if err := listAudit(ctx, t, admin, func(e *livedumpv1.AuditEntry) { seen[e.GetId()]++ }); err != nil {
			t.Fatalf("admin lists the audit log: %v", err)
		}
		// The attack's own calls are audited too; every stored entry must be there once.
		n := 0
		for id, k := range seen {
			if k != 1 {
				t.Fatalf("audit entry %d listed %d times", id, k)
			}
			n++
		}
		if n < audits {
			t.Fatalf("listed %d audit entries, want at least %d", n, audits)
		}
	})
	t.Run("dumps", func(t *testing.T) {
		seen := map[string]int{}
		if err := listDumps(ctx, t, viewer, func(d *livedumpv1.Dump) { seen[d.GetId()]++ }); err != nil {
			t.Fatalf("viewer lists dumps: %v", err)
		}
		if len(seen) != dumpCount {
			t.Fatalf("listed %d dumps, want %d", len(seen), dumpCount)
		}
		for id, n := range seen {
			if n != 1 {
				t.Fatalf("dump %s listed %d times", id, n)
			}
		}
	})
	t.Run("tokens", func(t *testing.T) {
		seen := map[string]int{}
		if err := listTokens(ctx, t, admin, func(tk *livedumpv1.Token) { seen[tk.GetId()]++ }); err != nil {
			t.Fatalf("admin lists tokens: %v", err)
		}
		if len(seen) < tokens {
			t.Fatalf("listed %d tokens, want at least %d", len(seen), tokens)
		}
		for id, n := range seen {
			if n != 1 {
				t.Fatalf("token %s listed %d times", id, n)
			}
		}
	})
	t.Run("capture", func(t *testing.T) {
		seen := map[string]int{}
		if err := getCapture(ctx, t, viewer, "c-big", func(tg *livedumpv1.CaptureTarget) { seen[tg.GetAgentId()]++ }); err != nil {
			t.Fatalf("viewer gets the capture: %v", err)
		}
		if len(seen) != targetCount {
			t.Fatalf("capture get showed %d targets, want %d", len(seen), targetCount)
		}
		for id, n := range seen {
			if n != 1 {
				t.Fatalf("target %s shown %d times", id, n)
			}
		}
	})
	t.Run("capture list", func(t *testing.T) {
		targets := 0
		if err := listCaptures(ctx, t, viewer, func(cp *livedumpv1.Capture) { targets += captureTargets(cp) }); err != nil {
			t.Fatalf("viewer lists captures: %v", err)
		}
		if targets != targetCount {
			t.Fatalf("capture list counts %d targets, want %d", targets, targetCount)
		}
	})
}

// captureTargets is how many targets a listed capture has.
func captureTargets(c *livedumpv1.Capture) int {
	return len(c.GetTargets()) + int(c.GetOmittedTargets())
}

// follow calls one page after another, as livedumpctl does, until a page
// says nothing follows; every page is checked against the size bound.
func follow[R proto.Message](t *testing.T, what string, call func(after string) (R, string, error)) error {
	t.Helper()
	after := ""
	for pages := 1; ; pages++ {
		resp, next, err := call(after)
		if err != nil {
			return err
		}
		checkPage(t, what, resp)
		if next == "" {
			t.Logf("%s: %d pages", what, pages)
			return nil
		}
		if next == after || pages > 1000 {
			return fmt.Errorf("%s: paging does not advance (after %q)", what, after)
		}
		after = next
	}
}

func listAgents(ctx context.Context, t *testing.T, c livedumpv1.FleetServiceClient, each func(*livedumpv1.Agent)) error {
	return follow(t, "ListAgents", func(after string) (*livedumpv1.ListAgentsResponse, string, error) {
		resp, err := c.ListAgents(ctx, &livedumpv1.ListAgentsRequest{After: after})
		for _, a := range resp.GetAgents() {
			each(a)
		}
		return resp, resp.GetNext(), err
	})
}

func listAudit(ctx context.Context, t *testing.T, c livedumpv1.FleetServiceClient, each func(*livedumpv1.AuditEntry)) error {
	return follow(t, "ListAudit", func(after string) (*livedumpv1.ListAuditResponse, string, error) {
		resp, err := c.ListAudit(ctx, &livedumpv1.ListAuditRequest{Limit: 10000, After: after})
		for _, e := range resp.GetEntries() {
			each(e)
		}
		return resp, resp.GetNext(), err
	})
}

func listDumps(ctx context.Context, t *testing.T, c livedumpv1.FleetServiceClient, each func(*livedumpv1.Dump)) error {
	return follow(t, "ListDumps", func(after string) (*livedumpv1.ListDumpsResponse, string, error) {
		resp, err := c.ListDumps(ctx, &livedumpv1.ListDumpsRequest{After: after})
		for _, d := range resp.GetDumps() {
			each(d)
		}
		return resp, resp.GetNext(), err
	})
}

func listTokens(ctx context.Context, t *testing.T, c livedumpv1.FleetServiceClient, each func(*livedumpv1.Token)) error {
	return follow(t, "ListTokens", func(after string) (*livedumpv1.ListTokensResponse, string, error) {
		resp, err := c.ListTokens(ctx, &livedumpv1.ListTokensRequest{After: after})
		for _, tk := range resp.GetTokens() {
			each(tk)
		}
		return resp, resp.GetNext(), err
	})
}

func listCaptures(ctx context.Context, t *testing.T, c livedumpv1.FleetServiceClient, each func(*livedumpv1.Capture)) error {
	return follow(t, "ListCaptures", func(after string) (*livedumpv1.ListCapturesResponse, string, error) {
		resp, err := c.ListCaptures(ctx, &livedumpv1.ListCapturesRequest{After: after})
		for _, cp := range resp.GetCaptures() {
			each(cp)
		}
		return resp, resp.GetNext(), err
	})
}

func getCapture(ctx context.Context, t *testing.T, c livedumpv1.FleetServiceClient, id string, each func(*livedumpv1.CaptureTarget)) error {
	return follow(t, "GetCapture", func(after string) (*livedumpv1.GetCaptureResponse, string, error) {
		resp, err := c.GetCapture(ctx, &livedumpv1.GetCaptureRequest{Id: id, After: after})
		for _, tg := range resp.GetCapture().GetTargets() {
			each(tg)
		}
		return resp, resp.GetNext(), err
	})
}
