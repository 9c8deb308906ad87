package security

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/harness"
)

// auditSize is the bytes of an audit entry's text fields.
func auditSize(e store.AuditEntry) int {
	return len(e.Actor) + len(e.Action) + len(e.Target) + len(e.Outcome) + len(e.Details)
}

// dbSize is the size of the SQLite database with its WAL.
func dbSize(t testing.TB, dir string) int64 {
	t.Helper()
	var n int64
	for _, f := range []string{"livedump.db", "livedump.db-wal"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// TestHole02_RefusedEnrollCannotFillTheAuditLog: anyone who reaches the port
// sends Enroll calls as large as gRPC accepts (labels, inventory, CSR and
// token of megabytes). Each is refused, the audit log keeps at most 1 KiB
// per refusal, the source is rate-limited (counted in a metric and audited
// in aggregate), nothing is enrolled or consumed, and an agent from another
// address still enrolls.
func TestHole02_RefusedEnrollCannotFillTheAuditLog(t *testing.T) {
	c := harness.StartController(t, nil) // the default limits: 1/s, burst 20
	ctx := context.Background()
	tok := c.Token(t, 100, nil)
	attacker := livedumpv1.NewAgentServiceClient(dialFrom(t, c, "127.0.0.2"))
	_, csr := harness.KeyCSR(t)

	mib := strings.Repeat("x", 1<<20)
	requests := []*livedumpv1.EnrollRequest{
		// A valid token and CSR; 2 MiB of labels and 1.4 MiB of inventory.
		{Token: tok, Csr: csr, Labels: map[string]string{"a": mib, "b" + mib[:200<<10]: mib[:800<<10]},
			Inventory: &livedumpv1.Inventory{Hostname: mib, OsBuild: mib[:400<<10]}},
		// A 3 MiB token.
		{Token: "ldt_" + strings.Repeat(mib, 3), Csr: csr, Inventory: harness.Inventory("EVIL")},
		// A 3.5 MiB CSR.
		{Token: tok, Csr: []byte(strings.Repeat(mib, 3) + mib[:512<<10]), Inventory: harness.Inventory("EVIL")},
		// 50,000 small labels.
		{Token: tok, Csr: csr, Labels: manyLabels(50000), Inventory: harness.Inventory("EVIL")},
	}
	beforeEntries, err := c.Store().ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	lastID := int64(0)
	for _, e := range beforeEntries {
		lastID = max(lastID, e.ID)
	}
	beforeDB := dbSize(t, c.DataDir)

	const calls = 60
	seen := map[codes.Code]int{}
	start := time.Now()
	for i := range calls {
		_, err := attacker.Enroll(ctx, requests[i%len(requests)])
		st := status.Convert(err)
		seen[st.Code()]++
		switch st.Code() {
		case codes.InvalidArgument:
			if len(st.Message()) > 512 {
				t.Errorf("call %d: refusal message of %d bytes echoes the request", i, len(st.Message()))
			}
			if !strings.ContainsAny(st.Message(), ":") {
				t.Errorf("call %d: refusal %q names no field", i, st.Message())
			}
		case codes.ResourceExhausted:
			if !strings.Contains(st.Message(), "rate") {
				t.Errorf("call %d: %q does not say it is rate-limited", i, st.Message())
			}
		default:
			if seen[st.Code()] <= 3 {
				t.Errorf("call %d: got %v, want InvalidArgument or ResourceExhausted", i, err)
			}
		}
	}
	t.Logf("refusals: %v in %s", seen, time.Since(start).Round(time.Millisecond))
	if passed := calls - seen[codes.ResourceExhausted]; passed > mayPass(time.Since(start)) {
		t.Errorf("%d of %d calls passed the rate limit in %s, want at most %d", passed, calls, time.Since(start).Round(time.Millisecond), mayPass(time.Since(start)))
	}
	if got := counterValue(t, c.Metrics, "livedump_controller_enroll_rate_limited_total", nil); got < float64(seen[codes.ResourceExhausted]) {
		t.Errorf("livedump_controller_enroll_rate_limited_total = %v, want >= %d", got, seen[codes.ResourceExhausted])
	}

	// The rate-limited calls are audited in aggregate, promptly.
	var entries []store.AuditEntry
	deadline := time.Now().Add(5 * time.Second)
	for {
		all, err := c.Store().ListAudit(ctx, store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		entries = entries[:0]
		limited := false
		for _, e := range all {
			if e.ID > lastID {
				entries = append(entries, e)
				limited = limited || strings.Contains(e.Outcome, "rate limit")
			}
		}
		if limited {
			break
		}
		if time.Now().After(deadline) {
			t.Error("no audit entry for the rate-limited calls")
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	total := 0
	for _, e := range entries {
		n := auditSize(e)
		total += n
		if n > 1024 {
			t.Errorf("audit entry %d (%s by %s) is %d bytes, want <= 1024", e.ID, e.Action, e.Actor, n)
		}
		if e.Action == "AgentService/Enroll" && !strings.Contains(e.Details+e.Actor, "127.0.0.2") {
			t.Errorf("audit entry %d does not name the source address: %+v", e.ID, e)
		}
	}
	t.Logf("%d new audit entries, %d bytes; database grew by %d bytes", len(entries), total, dbSize(t, c.DataDir)-beforeDB)
	if total > 64<<10 {
		t.Errorf("%d refused calls wrote %d bytes of audit, want <= 64 KiB", calls, total)
	}
	if grew := dbSize(t, c.DataDir) - beforeDB; grew > 4<<20 {
		t.Errorf("database grew by %d bytes, want <= 4 MiB", grew)
	}

	// Nothing enrolled, the token untouched.
	admin := c.Fleet(t, pki.RoleAdmin)
	agents, err := admin.ListAgents(ctx, &livedumpv1.ListAgentsRequest{})
	if err != nil || len(agents.GetAgents()) != 0 {
		t.Errorf("ListAgents = %v, %v; want none", agents.GetAgents(), err)
	}
	toks, err := admin.ListTokens(ctx, &livedumpv1.ListTokensRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range toks.GetTokens() {
		if tk.GetUsesLeft() != tk.GetUses() {
			t.Errorf("token %s: %d of %d uses left after refused calls", tk.GetId(), tk.GetUsesLeft(), tk.GetUses())
		}
	}

	// The limit is per source: an agent on 127.0.0.1 enrolls.
	raw := c.EnrollRaw(t, "GOOD-01", nil)
	if raw.ID == "" {
		t.Fatal("legitimate enrollment failed")
	}
}

// mayPass is how many calls the default Enroll limit (1/s, burst 20) lets
// through in d: the burst, the tokens refilled meanwhile, and one more.
func mayPass(d time.Duration) int { return 20 + int(d.Seconds()) + 1 }

func manyLabels(n int) map[string]string {
	m := make(map[string]string, n)
	for i := range n {
		m["k"+strconv.Itoa(i)] = "v"
	}
	return m
}

// TestHole02_AnonymousCallsToOtherMethodsCannotFillTheAuditLog: refused
// calls without a certificate to mutating operator methods are audited too;
// a flood of them with megabytes of labels is rate-limited per source and
// costs the audit log at most 1 KiB per entry.
func TestHole02_AnonymousCallsToOtherMethodsCannotFillTheAuditLog(t *testing.T) {
	c := harness.StartController(t, nil)
	ctx := context.Background()
	anon := livedumpv1.NewFleetServiceClient(dialFrom(t, c, "127.0.0.3"))
	mib := strings.Repeat("x", 1<<20)
	seen := map[codes.Code]int{}
	start := time.Now()
	for range 60 {
		_, err := anon.LabelAgent(ctx, &livedumpv1.LabelAgentRequest{AgentId: "x", Set: map[string]string{"a": mib, "b": mib, "c": mib}})
		seen[status.Code(err)]++
	}
	t.Logf("refusals: %v", seen)
	if may := mayPass(time.Since(start)); seen[codes.Unauthenticated]+seen[codes.ResourceExhausted] != 60 || seen[codes.ResourceExhausted] < 60-may {
		t.Errorf("refusals %v: want all Unauthenticated or ResourceExhausted, at least %d rate-limited", seen, 60-may)
	}
	entries, err := c.Store().ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, e := range entries {
		total += auditSize(e)
		if auditSize(e) > 1024 {
			t.Errorf("audit entry %d (%s by %s) is %d bytes, want <= 1024", e.ID, e.Action, e.Actor, auditSize(e))
		}
	}
	t.Logf("%d audit entries, %d bytes", len(entries), total)
	if total > 64<<10 {
		t.Errorf("60 refused calls wrote %d bytes of audit, want <= 64 KiB", total)
	}
}
