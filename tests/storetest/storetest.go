// Package storetest is the conformance suite every store.Store
// implementation must pass. Keeping the behavioural contract in one place,
// rather than in each backend's tests, is what lets the SQLite and
// PostgreSQL stores be swapped without the controller noticing.
package storetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/livedump/livedump/controller/store"
)

// Run runs the conformance suite. open must return a new, empty store for
// each call; the suite closes it when the subtest ends, so open must not
// register its own Close.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	fresh := func(t *testing.T) store.Store {
		t.Helper()
		s := open(t)
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"AgentCreateGet", testAgentCreateGet},
		{"AgentCreateConflict", testAgentCreateConflict},
		{"AgentNotFound", testAgentNotFound},
		{"AgentList", testAgentList},
		{"AgentListPage", testAgentListPage},
		{"AgentHostnames", testAgentHostnames},
		{"AgentLabels", testAgentLabels},
		{"AgentUpdateInventory", testAgentUpdateInventory},
		{"AgentTouch", testAgentTouch},
		{"AgentSetCertificate", testAgentSetCertificate},
		{"AgentRevoke", testAgentRevoke},
		{"TimePrecision", testTimePrecision},
		{"TokenCreateList", testTokenCreateList},
		{"TokenRevoke", testTokenRevoke},
		{"TokenConsume", testTokenConsume},
		{"TokenConsumeErrors", testTokenConsumeErrors},
		{"TokenConsumeConcurrent", testTokenConsumeConcurrent},
		{"AuditAppendList", testAuditAppendList},
		{"AuditFilter", testAuditFilter},
		{"AuditLimit", testAuditLimit},
		{"AuditPage", testAuditPage},
		{"ProvisionState", testProvisionState},
		{"Artifacts", testArtifacts},
		{"Captures", testCaptures},
		{"Events", testEvents},
		{"EventsDuplicateInBatch", testEventsDuplicateInBatch},
		{"Dumps", testDumps},
		{"DumpReportsCannotForge", testDumpReportsCannotForge},
		{"DumpBytes", testDumpBytes},
		{"StaleDumpUploads", testStaleDumpUploads},
		{"AgentMemory", testAgentMemory},
		{"GetTarget", testGetTarget},
		{"AdmitDump", testAdmitDump},
		{"AdmitDumpConcurrent", testAdmitDumpConcurrent},
		{"ManyTargets", testManyTargets},
		{"ClaimTarget", testClaimTarget},
		{"ClaimTargets", testClaimTargets},
		{"SetTargetStates", testSetTargetStates},
		{"ClaimTargetsConcurrent", testClaimTargetsConcurrent},
		{"ClaimTargetConcurrent", testClaimTargetConcurrent},
		{"FinishCapture", testFinishCapture},
		{"FinishCaptureConcurrent", testFinishCaptureConcurrent},
		{"Replicas", testReplicas},
		{"Presence", testPresence},
		{"Directives", testDirectives},
		{"AgentHistory", testAgentHistory},
		{"DirectivesDelete", testDirectivesDelete},
		{"AuditCertSerial", testAuditCertSerial},
		{"OperatorCertRecord", testOperatorCertRecord},
		{"OperatorCertRevokeSerial", testOperatorCertRevokeSerial},
		{"OperatorCertRevokeName", testOperatorCertRevokeName},
		{"OperatorCertRevokedBoth", testOperatorCertRevokedBoth},
		{"OldestDumps", testOldestDumps},
		{"DeleteDump", testDeleteDump},
		{"DeleteDumpRacesRead", testDeleteDumpRacesRead},
		{"DeleteEvents", testDeleteEvents},
		{"DeleteCapture", testDeleteCapture},
		{"AcquireLease", testAcquireLease},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, fresh(t))
		})
	}
}

// base is a fixed instant with sub-millisecond digits and a non-UTC zone, so
// every test that round-trips it also checks truncation and normalisation.
var base = time.Date(2025, 3, 14, 15, 9, 26, 535_897_932, time.FixedZone("UTC+2", 2*60*60))

// norm is what a store must return for t: UTC, millisecond precision.
func norm(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.Truncate(time.Millisecond).UTC()
}

func hash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

func sampleAgent(id, host string) store.Agent {
	return store.Agent{
		ID:                 id,
		Labels:             map[string]string{"env": "prod", "team": "infra"},
		Hostname:           host,
		OSBuild:            "26100",
		OSUBR:              4061,
		OSEdition:          "ServerDatacenter",
		OSProductName:      "Windows Server 2025 Datacenter",
		OSInstallationType: "Server Core",
		Arch:               "amd64",
		AgentVersion:       "1.2.3",
		FirstSeen:          base,
		LastSeen:           base.Add(time.Minute),
		CertSerial:         "0a1b2c",
		CertExpiry:         base.Add(90 * 24 * time.Hour),
	}
}

func sampleToken(id, secret string) store.Token {
	return store.Token{
		ID:         id,
		SecretHash: hash(secret),
		Uses:       3,
		UsesLeft:   3,
		Labels:     map[string]string{"site": "ams"},
		Created:    base,
		Expires:    base.Add(24 * time.Hour),
		CreatedBy:  "alice",
	}
}

// checkTime fails unless got is want in UTC at millisecond precision.
func checkTime(t *testing.T, field string, got, want time.Time) {
	t.Helper()
	want = norm(want)
	if want.IsZero() {
		if !got.IsZero() {
			t.Errorf("%s = %v, want zero time", field, got)
		}
		return
	}
	if !got.Equal(want) {
		t.Errorf("%s = %v, want %v", field, got, want)
	}
	if got.Location() != time.UTC {
		t.Errorf("%s location = %v, want UTC", field, got.Location())
	}
}

// checkLabels fails unless got equals want; nil and empty are the same on
// input but a store must always return a non-nil map.
func checkLabels(t *testing.T, field string, got, want map[string]string) {
	t.Helper()
	if got == nil {
		t.Errorf("%s is nil, want non-nil map", field)
	}
	if !maps.Equal(got, want) {
		t.Errorf("%s = %v, want %v", field, got, want)
	}
}

func checkAgent(t *testing.T, got, want store.Agent) {
	t.Helper()
	type plain struct {
		ID, Hostname, OSBuild, OSEdition, OSProductName, OSInstallationType, Arch, AgentVersion, CertSerial string
		OSUBR                                                                                               uint32
		Revoked                                                                                             bool
	}
	strip := func(a store.Agent) plain {
		return plain{a.ID, a.Hostname, a.OSBuild, a.OSEdition, a.OSProductName, a.OSInstallationType,
			a.Arch, a.AgentVersion, a.CertSerial, a.OSUBR, a.Revoked}
	}
	if g, w := strip(got), strip(want); g != w {
		t.Errorf("agent fields = %+v, want %+v", g, w)
	}
	if got.PrevSerial != want.PrevSerial {
		t.Errorf("PrevSerial = %q, want %q", got.PrevSerial, want.PrevSerial)
	}
	checkTime(t, "PrevUntil", got.PrevUntil, want.PrevUntil)
	checkLabels(t, "Labels", got.Labels, want.Labels)
	checkTime(t, "FirstSeen", got.FirstSeen, want.FirstSeen)
	checkTime(t, "LastSeen", got.LastSeen, want.LastSeen)
	checkTime(t, "CertExpiry", got.CertExpiry, want.CertExpiry)
	checkTime(t, "RevokedAt", got.RevokedAt, want.RevokedAt)
}

func checkToken(t *testing.T, got, want store.Token) {
	t.Helper()
	if got.ID != want.ID || string(got.SecretHash) != string(want.SecretHash) ||
		got.Uses != want.Uses || got.UsesLeft != want.UsesLeft ||
		got.CreatedBy != want.CreatedBy || got.Revoked != want.Revoked {
		t.Errorf("token = {ID:%s Hash:%x Uses:%d UsesLeft:%d CreatedBy:%s Revoked:%v}, want {ID:%s Hash:%x Uses:%d UsesLeft:%d CreatedBy:%s Revoked:%v}",
			got.ID, got.SecretHash, got.Uses, got.UsesLeft, got.CreatedBy, got.Revoked,
			want.ID, want.SecretHash, want.Uses, want.UsesLeft, want.CreatedBy, want.Revoked)
	}
	checkLabels(t, "Labels", got.Labels, want.Labels)
	checkTime(t, "Created", got.Created, want.Created)
	checkTime(t, "Expires", got.Expires, want.Expires)
}

func wantErr(t *testing.T, op string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: err = %v, want %v", op, err, want)
	}
}

func must(t *testing.T, op string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", op, err)
	}
}

func testAgentCreateGet(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := sampleAgent("agent-1", "host-a")
	must(t, "CreateAgent", s.CreateAgent(ctx, a))
	got, err := s.GetAgent(ctx, a.ID)
	must(t, "GetAgent", err)
	checkAgent(t, got, a)

	// Revocation state given at creation is stored too, e.g. when importing.
	r := sampleAgent("agent-2", "host-b")
	r.Revoked, r.RevokedAt = true, base.Add(time.Hour)
	must(t, "CreateAgent revoked", s.CreateAgent(ctx, r))
	got, err = s.GetAgent(ctx, r.ID)
	must(t, "GetAgent revoked", err)
	checkAgent(t, got, r)
}

func testAgentCreateConflict(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := sampleAgent("agent-1", "host-a")
	must(t, "CreateAgent", s.CreateAgent(ctx, a))
	b := sampleAgent("agent-1", "other-host")
	wantErr(t, "CreateAgent duplicate", s.CreateAgent(ctx, b), store.ErrConflict)
	got, err := s.GetAgent(ctx, a.ID)
	must(t, "GetAgent", err)
	checkAgent(t, got, a) // the original must be untouched
}

func testAgentNotFound(t *testing.T, s store.Store) {
	ctx := context.Background()
	_, err := s.GetAgent(ctx, "missing")
	wantErr(t, "GetAgent", err, store.ErrNotFound)
	wantErr(t, "UpdateInventory", s.UpdateInventory(ctx, sampleAgent("missing", "h")), store.ErrNotFound)
	wantErr(t, "TouchAgent", s.TouchAgent(ctx, "missing", base), store.ErrNotFound)
	_, err = s.SetLabels(ctx, "missing", map[string]string{"a": "b"})
	wantErr(t, "SetLabels", err, store.ErrNotFound)
	wantErr(t, "SetCertificate", s.SetCertificate(ctx, "missing", "01", base, time.Time{}), store.ErrNotFound)
	_, err = s.RevokeAgent(ctx, "missing", base)
	wantErr(t, "RevokeAgent", err, store.ErrNotFound)
}

func testAgentList(t *testing.T, s store.Store) {
	ctx := context.Background()
	got, err := s.ListAgents(ctx)
	must(t, "ListAgents empty", err)
	if len(got) != 0 {
		t.Fatalf("ListAgents on empty store = %d agents", len(got))
	}

	// Inserted out of order, with a hostname tie broken by ID.
	for _, a := range []store.Agent{
		sampleAgent("c", "beta"),
		sampleAgent("z", "alpha"),
		sampleAgent("b", "beta"),
		sampleAgent("a", "gamma"),
	} {
		must(t, "CreateAgent "+a.ID, s.CreateAgent(ctx, a))
	}
	got, err = s.ListAgents(ctx)
	must(t, "ListAgents", err)
	var order []string
	for _, a := range got {
		order = append(order, a.Hostname+"/"+a.ID)
	}
	if want := "[alpha/z beta/b beta/c gamma/a]"; fmt.Sprint(order) != want {
		t.Errorf("ListAgents order = %v, want %s", order, want)
	}
	for _, a := range got {
		checkAgent(t, a, sampleAgent(a.ID, a.Hostname))
	}

	// ListAgentSelectors: the same order without revoked agents, with only
	// what a selector and a capture preview read.
	must(t, "SetProvisionState b", s.SetProvisionState(ctx, "b", "failed", "no driver", base))
	_, err = s.RevokeAgent(ctx, "c", base)
	must(t, "RevokeAgent c", err)
	sel, err := s.ListAgentSelectors(ctx)
	must(t, "ListAgentSelectors", err)
	order = nil
	for _, a := range sel {
		order = append(order, a.Hostname+"/"+a.ID)
		full, err := s.GetAgent(ctx, a.ID)
		must(t, "GetAgent "+a.ID, err)
		want := store.Agent{ID: full.ID, Labels: full.Labels, Hostname: full.Hostname, OSBuild: full.OSBuild,
			ProvisionState: full.ProvisionState, ProvisionDetail: full.ProvisionDetail}
		if !reflect.DeepEqual(a, want) {
			t.Errorf("ListAgentSelectors %s = %+v, want %+v", a.ID, a, want)
		}
	}
	if want := "[alpha/z beta/b gamma/a]"; fmt.Sprint(order) != want {
		t.Errorf("ListAgentSelectors order = %v, want %s", order, want)
	}
}

// testAgentHostnames: store.Hostnames names many agents (more than it reads
// one by one) the same way whatever the backend, with the store's own
// AgentHostnames when it has one; unknown IDs are left out, revoked agents
// keep their names.
func testAgentHostnames(t *testing.T, s store.Store) {
	ctx := context.Background()
	const n = 1300 // several AgentHostnames batches
	want := map[string]bool{"unknown": true}
	for i := range n {
		id := fmt.Sprintf("h%04d", i)
		must(t, "CreateAgent "+id, s.CreateAgent(ctx, sampleAgent(id, fmt.Sprintf("HOST-%d", i%11))))
		if i%2 == 0 {
			want[id] = true
		}
	}
	_, err := s.RevokeAgent(ctx, "h0002", time.Now())
	must(t, "RevokeAgent", err)
	got, err := store.Hostnames(ctx, s, want)
	must(t, "Hostnames", err)
	if len(got) != n/2 {
		t.Fatalf("Hostnames named %d agents, want %d", len(got), n/2)
	}
	for id := range want {
		var i int
		if _, err := fmt.Sscanf(id, "h%d", &i); err != nil {
			continue
		}
		if got[id] != fmt.Sprintf("HOST-%d", i%11) {
			t.Fatalf("Hostnames[%s] = %q", id, got[id])
		}
	}
	if _, ok := s.(store.HostnameReader); ok {
		few, err := s.(store.HostnameReader).AgentHostnames(ctx, []string{"h0001", "nobody", "h0001"})
		must(t, "AgentHostnames", err)
		if len(few) != 1 || few["h0001"] != "HOST-1" {
			t.Fatalf("AgentHostnames = %v", few)
		}
		none, err := s.(store.HostnameReader).AgentHostnames(ctx, nil)
		must(t, "AgentHostnames of none", err)
		if len(none) != 0 {
			t.Fatalf("AgentHostnames(nil) = %v", none)
		}
	}
}

// testAgentListPage: pages of ListAgentsPage, each starting after the last
// agent of the one before, read every agent once in ListAgents' order, also
// when an agent before the position is added in between.
func testAgentListPage(t *testing.T, s store.Store) {
	ctx := context.Background()
	got, err := s.ListAgentsPage(ctx, "", "", 10)
	must(t, "ListAgentsPage empty", err)
	if got == nil || len(got) != 0 {
		t.Fatalf("ListAgentsPage on empty store = %v", got)
	}
	for _, a := range []store.Agent{
		sampleAgent("c", "beta"), sampleAgent("z", "alpha"), sampleAgent("b", "beta"),
		sampleAgent("a", "gamma"), sampleAgent("y", "beta"), sampleAgent("d", ""),
	} {
		must(t, "CreateAgent "+a.ID, s.CreateAgent(ctx, a))
	}
	var order []string
	host, id := "", ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatalf("paging does not end: %v", order)
		}
		page, err := s.ListAgentsPage(ctx, host, id, 2)
		must(t, "ListAgentsPage", err)
		if len(page) > 2 {
			t.Fatalf("page of %d agents, limit 2", len(page))
		}
		if len(page) == 0 {
			break
		}
		for _, a := range page {
			order = append(order, a.Hostname+"/"+a.ID)
			checkAgent(t, a, sampleAgent(a.ID, a.Hostname))
		}
		host, id = page[len(page)-1].Hostname, page[len(page)-1].ID
		if pages == 0 {
			// Sorts before the position: not in a later page.
			must(t, "CreateAgent", s.CreateAgent(ctx, sampleAgent("0", "")))
		}
	}
	if want := "[/d alpha/z beta/b beta/c beta/y gamma/a]"; fmt.Sprint(order) != want {
		t.Errorf("pages read %v, want %s", order, want)
	}
	got, err = s.ListAgentsPage(ctx, "beta", "b", 100)
	must(t, "ListAgentsPage after beta/b", err)
	if len(got) != 3 || got[0].ID != "c" || got[2].ID != "a" {
		t.Errorf("after beta/b: %d agents, first %v", len(got), got)
	}
	got, err = s.ListAgentsPage(ctx, "", "", 0)
	must(t, "ListAgentsPage limit 0", err)
	if len(got) != 0 {
		t.Errorf("limit 0: %d agents", len(got))
	}
}

func testAgentLabels(t *testing.T, s store.Store) {
	ctx := context.Background()

	for _, tc := range []struct {
		id     string
		labels map[string]string
	}{
		{"nil", nil},
		{"empty", map[string]string{}},
		{"odd", map[string]string{"": "empty key", "k": "", "ünï": "cødé \"quoted\" \\ {json}", "a.b/c": "x=y,z"}},
	} {
		a := sampleAgent(tc.id, "h")
		a.Labels = tc.labels
		must(t, "CreateAgent "+tc.id, s.CreateAgent(ctx, a))
		got, err := s.GetAgent(ctx, tc.id)
		must(t, "GetAgent "+tc.id, err)
		want := tc.labels
		if want == nil {
			want = map[string]string{}
		}
		checkLabels(t, tc.id+" Labels", got.Labels, want)
	}

	// SetLabels replaces the whole set rather than merging into it.
	repl := map[string]string{"new": "1"}
	got, err := s.SetLabels(ctx, "odd", repl)
	must(t, "SetLabels", err)
	checkLabels(t, "SetLabels result", got.Labels, repl)
	want := sampleAgent("odd", "h")
	want.Labels = repl
	checkAgent(t, got, want)
	got, err = s.GetAgent(ctx, "odd")
	must(t, "GetAgent after SetLabels", err)
	checkLabels(t, "stored after SetLabels", got.Labels, repl)

	got, err = s.SetLabels(ctx, "odd", nil)
	must(t, "SetLabels nil", err)
	checkLabels(t, "SetLabels nil result", got.Labels, map[string]string{})
}

func testAgentUpdateInventory(t *testing.T, s store.Store) {
	ctx := context.Background()
	orig := sampleAgent("agent-1", "old-host")
	must(t, "CreateAgent", s.CreateAgent(ctx, orig))

	// Everything the agent reports changes; the controller-owned fields in
	// this value are junk that UpdateInventory must ignore.
	upd := store.Agent{
		ID:                 orig.ID,
		Labels:             map[string]string{"junk": "1"},
		Hostname:           "new-host",
		OSBuild:            "26200",
		OSUBR:              1,
		OSEdition:          "Professional",
		OSProductName:      "Windows 11 Pro",
		OSInstallationType: "Client",
		Arch:               "arm64",
		AgentVersion:       "2.0.0",
		FirstSeen:          base.Add(99 * time.Hour),
		LastSeen:           base.Add(2 * time.Hour),
		CertSerial:         "junk",
		CertExpiry:         base.Add(99 * time.Hour),
		Revoked:            true,
		RevokedAt:          base.Add(99 * time.Hour),
	}
	must(t, "UpdateInventory", s.UpdateInventory(ctx, upd))
	got, err := s.GetAgent(ctx, orig.ID)
	must(t, "GetAgent", err)

	want := orig
	want.Hostname, want.OSBuild, want.OSUBR = upd.Hostname, upd.OSBuild, upd.OSUBR
	want.OSEdition, want.OSProductName, want.OSInstallationType = upd.OSEdition, upd.OSProductName, upd.OSInstallationType
	want.Arch, want.AgentVersion, want.LastSeen = upd.Arch, upd.AgentVersion, upd.LastSeen
	checkAgent(t, got, want)
}

func testAgentTouch(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := sampleAgent("agent-1", "h")
	must(t, "CreateAgent", s.CreateAgent(ctx, a))
	seen := base.Add(3*time.Hour + 123456789*time.Nanosecond)
	must(t, "TouchAgent", s.TouchAgent(ctx, a.ID, seen))
	got, err := s.GetAgent(ctx, a.ID)
	must(t, "GetAgent", err)
	a.LastSeen = seen
	checkAgent(t, got, a)
}

func testAgentSetCertificate(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := sampleAgent("agent-1", "h")
	a.CertSerial, a.CertExpiry = "", time.Time{}
	must(t, "CreateAgent", s.CreateAgent(ctx, a))
	got, err := s.GetAgent(ctx, a.ID)
	must(t, "GetAgent before", err)
	checkAgent(t, got, a)

	exp := base.Add(30 * 24 * time.Hour)
	must(t, "SetCertificate", s.SetCertificate(ctx, a.ID, "deadbeef01", exp, time.Time{}))
	got, err = s.GetAgent(ctx, a.ID)
	must(t, "GetAgent", err)
	a.CertSerial, a.CertExpiry = "deadbeef01", exp
	checkAgent(t, got, a)

	// A renewal makes the replaced certificate the previous one, accepted
	// until the grace time given.
	grace := base.Add(10 * time.Minute)
	must(t, "SetCertificate renew", s.SetCertificate(ctx, a.ID, "deadbeef02", exp.Add(time.Hour), grace))
	got, err = s.GetAgent(ctx, a.ID)
	must(t, "GetAgent renew", err)
	a.CertSerial, a.CertExpiry, a.PrevSerial, a.PrevUntil = "deadbeef02", exp.Add(time.Hour), "deadbeef01", grace
	checkAgent(t, got, a)

	// Only one previous certificate is kept: a second renewal forgets the
	// first, and a zero grace time leaves none accepted.
	must(t, "SetCertificate renew again", s.SetCertificate(ctx, a.ID, "deadbeef03", exp.Add(2*time.Hour), time.Time{}))
	got, err = s.GetAgent(ctx, a.ID)
	must(t, "GetAgent renew again", err)
	a.CertSerial, a.CertExpiry, a.PrevSerial, a.PrevUntil = "deadbeef03", exp.Add(2*time.Hour), "deadbeef02", time.Time{}
	checkAgent(t, got, a)

	// Labels and revocation are not touched.
	if got.Revoked || len(got.Labels) != len(a.Labels) {
		t.Errorf("SetCertificate changed other fields: %+v", got)
	}
}

func testAgentRevoke(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := sampleAgent("agent-1", "h")
	must(t, "CreateAgent", s.CreateAgent(ctx, a))

	at := base.Add(5 * time.Hour)
	got, err := s.RevokeAgent(ctx, a.ID, at)
	must(t, "RevokeAgent", err)
	a.Revoked, a.RevokedAt = true, at
	checkAgent(t, got, a)

	// Idempotent: a second revoke succeeds and keeps the first time.
	got, err = s.RevokeAgent(ctx, a.ID, at.Add(time.Hour))
	must(t, "RevokeAgent again", err)
	checkAgent(t, got, a)
	got, err = s.GetAgent(ctx, a.ID)
	must(t, "GetAgent", err)
	checkAgent(t, got, a)
}

func testTimePrecision(t *testing.T, s store.Store) {
	ctx := context.Background()
	zones := []*time.Location{time.UTC, time.FixedZone("west", -7*60*60-30*60), time.Local}
	for i, loc := range zones {
		// 999_999 ns checks truncation rather than rounding; the pre-1970
		// instant checks negative millisecond values.
		for j, ts := range []time.Time{
			time.Date(2031, 12, 31, 23, 59, 59, 999_999_999, loc),
			time.Date(1969, 7, 20, 20, 17, 40, 1_999_999, loc),
			time.Now().In(loc), // carries a monotonic reading
		} {
			id := fmt.Sprintf("t-%d-%d", i, j)
			a := sampleAgent(id, "h")
			a.FirstSeen, a.LastSeen, a.CertExpiry = ts, ts, ts
			must(t, "CreateAgent", s.CreateAgent(ctx, a))
			got, err := s.GetAgent(ctx, id)
			must(t, "GetAgent", err)
			checkAgent(t, got, a)
			if !got.LastSeen.Equal(ts.Truncate(time.Millisecond)) {
				t.Errorf("%s: LastSeen %v not %v truncated to ms", id, got.LastSeen, ts)
			}
		}
	}
}

func testTokenCreateList(t *testing.T, s store.Store) {
	ctx := context.Background()
	got, err := s.ListTokens(ctx)
	must(t, "ListTokens empty", err)
	if len(got) != 0 {
		t.Fatalf("ListTokens on empty store = %d tokens", len(got))
	}

	older := sampleToken("tok-b", "s1")
	newer := sampleToken("tok-a", "s2")
	newer.Created = base.Add(time.Second)
	newer.Labels = nil
	newer.Expires = time.Time{} // never expires
	newer.Uses, newer.UsesLeft = 10, 7
	must(t, "CreateToken older", s.CreateToken(ctx, older))
	must(t, "CreateToken newer", s.CreateToken(ctx, newer))

	dup := sampleToken("tok-b", "other")
	wantErr(t, "CreateToken duplicate", s.CreateToken(ctx, dup), store.ErrConflict)

	got, err = s.ListTokens(ctx)
	must(t, "ListTokens", err)
	if len(got) != 2 {
		t.Fatalf("ListTokens = %d tokens, want 2", len(got))
	}
	newer.Labels = map[string]string{}
	checkToken(t, got[0], newer)
	checkToken(t, got[1], older)
}

func testTokenRevoke(t *testing.T, s store.Store) {
	ctx := context.Background()
	_, err := s.RevokeToken(ctx, "missing")
	wantErr(t, "RevokeToken missing", err, store.ErrNotFound)

	tok := sampleToken("tok", "secret")
	must(t, "CreateToken", s.CreateToken(ctx, tok))
	got, err := s.RevokeToken(ctx, tok.ID)
	must(t, "RevokeToken", err)
	tok.Revoked = true
	checkToken(t, got, tok)

	got, err = s.RevokeToken(ctx, tok.ID)
	must(t, "RevokeToken again", err)
	checkToken(t, got, tok)

	list, err := s.ListTokens(ctx)
	must(t, "ListTokens", err)
	if len(list) != 1 || !list[0].Revoked {
		t.Errorf("ListTokens after revoke = %+v", list)
	}
}

func testTokenConsume(t *testing.T, s store.Store) {
	ctx := context.Background()
	tok := sampleToken("tok", "secret")
	must(t, "CreateToken", s.CreateToken(ctx, tok))

	now := base.Add(time.Hour)
	for want := tok.UsesLeft; want > 0; want-- {
		got, err := s.ConsumeToken(ctx, tok.ID, hash("secret"), now)
		must(t, "ConsumeToken", err)
		// The token comes back as it was before this use.
		exp := tok
		exp.UsesLeft = want
		checkToken(t, got, exp)
	}
	_, err := s.ConsumeToken(ctx, tok.ID, hash("secret"), now)
	wantErr(t, "ConsumeToken exhausted", err, store.ErrTokenExhausted)

	list, err := s.ListTokens(ctx)
	must(t, "ListTokens", err)
	if len(list) != 1 || list[0].UsesLeft != 0 || list[0].Uses != tok.Uses {
		t.Errorf("after consuming all uses: %+v", list)
	}

	// A token without an expiry stays valid arbitrarily far in the future.
	forever := sampleToken("forever", "secret")
	forever.Expires = time.Time{}
	must(t, "CreateToken forever", s.CreateToken(ctx, forever))
	_, err = s.ConsumeToken(ctx, forever.ID, hash("secret"), base.AddDate(100, 0, 0))
	must(t, "ConsumeToken forever", err)
}

func testTokenConsumeErrors(t *testing.T, s store.Store) {
	ctx := context.Background()
	now := base.Add(time.Hour)
	mk := func(id string, edit func(*store.Token)) store.Token {
		tok := sampleToken(id, "secret")
		if edit != nil {
			edit(&tok)
		}
		must(t, "CreateToken "+id, s.CreateToken(ctx, tok))
		return tok
	}
	mk("ok", nil)
	mk("revoked", func(tk *store.Token) { tk.Revoked = true })
	mk("exhausted", func(tk *store.Token) { tk.UsesLeft = 0 })
	exp := mk("expiring", nil)
	mk("nohash", func(tk *store.Token) { tk.SecretHash = nil })
	mk("revoked-expired-exhausted", func(tk *store.Token) {
		tk.Revoked, tk.UsesLeft, tk.Expires = true, 0, base
	})

	cases := []struct {
		name, id string
		hash     []byte
		now      time.Time
		want     error
	}{
		{"missing", "missing", hash("secret"), now, store.ErrNotFound},
		{"wrong hash", "ok", hash("wrong"), now, store.ErrNotFound},
		{"truncated hash", "ok", hash("secret")[:16], now, store.ErrNotFound},
		{"nil hash", "ok", nil, now, store.ErrNotFound},
		{"empty stored hash", "nohash", nil, now, store.ErrNotFound},
		{"empty stored hash, empty given", "nohash", []byte{}, now, store.ErrNotFound},
		// Without the secret, a caller must not learn the token's state.
		{"wrong hash on dead token", "revoked-expired-exhausted", hash("wrong"), now, store.ErrNotFound},
		{"revoked", "revoked", hash("secret"), now, store.ErrTokenRevoked},
		{"exhausted", "exhausted", hash("secret"), now, store.ErrTokenExhausted},
		{"expired at expiry", "expiring", hash("secret"), exp.Expires, store.ErrTokenExpired},
		{"expired after expiry", "expiring", hash("secret"), exp.Expires.Add(time.Hour), store.ErrTokenExpired},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.ConsumeToken(ctx, tc.id, tc.hash, tc.now)
			wantErr(t, "ConsumeToken", err, tc.want)
		})
	}

	// Expiry is judged against the passed now, not the wall clock: base is
	// long past, yet a now before the expiry succeeds.
	got, err := s.ConsumeToken(ctx, "expiring", hash("secret"), exp.Expires.Add(-time.Millisecond))
	must(t, "ConsumeToken just before expiry", err)
	checkToken(t, got, exp)

	// Failed attempts must not have used anything up.
	list, err := s.ListTokens(ctx)
	must(t, "ListTokens", err)
	left := map[string]int{}
	for _, tk := range list {
		left[tk.ID] = tk.UsesLeft
	}
	if left["ok"] != 3 || left["revoked"] != 3 || left["expiring"] != 2 {
		t.Errorf("uses left after failed consumes = %v", left)
	}
}

func testTokenConsumeConcurrent(t *testing.T, s store.Store) {
	ctx := context.Background()
	const uses, workers = 5, 20
	tok := sampleToken("tok", "secret")
	tok.Uses, tok.UsesLeft = uses, uses
	must(t, "CreateToken", s.CreateToken(ctx, tok))

	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		ok        int
		exhausted int
		seen      = map[int]bool{}
		start     = make(chan struct{})
	)
	for range workers {
		wg.Go(func() {
			<-start
			got, err := s.ConsumeToken(ctx, tok.ID, hash("secret"), base)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
				if seen[got.UsesLeft] {
					t.Errorf("two consumers both saw UsesLeft=%d", got.UsesLeft)
				}
				seen[got.UsesLeft] = true
			case errors.Is(err, store.ErrTokenExhausted):
				exhausted++
			default:
				t.Errorf("ConsumeToken: unexpected error %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	if ok != uses || exhausted != workers-uses {
		t.Errorf("succeeded %d, exhausted %d; want %d and %d", ok, exhausted, uses, workers-uses)
	}
	list, err := s.ListTokens(ctx)
	must(t, "ListTokens", err)
	if len(list) != 1 || list[0].UsesLeft != 0 {
		t.Errorf("after concurrent consume: %+v", list)
	}
}

func testAuditAppendList(t *testing.T, s store.Store) {
	ctx := context.Background()
	got, err := s.ListAudit(ctx, store.AuditFilter{})
	must(t, "ListAudit empty", err)
	if len(got) != 0 {
		t.Fatalf("ListAudit on empty store = %d entries", len(got))
	}

	entries := []store.AuditEntry{
		{Time: base, Actor: "alice", Action: "CreateToken", Target: "tok-1", Outcome: "ok", Details: `{"uses":3}`},
		{Time: base.Add(2 * time.Second), Actor: "bob", Action: "RevokeAgent", Target: "agent-1", Outcome: "denied", Details: `{}`},
		// Same millisecond as the previous one: the later insert is newer.
		{Time: base.Add(2*time.Second + 100*time.Microsecond), Actor: "carol", Action: "SetLabels", Target: "agent-2", Outcome: "ok"},
		// Appended last but happened earliest: ordering is by time.
		{Time: base.Add(-time.Hour), Actor: "system", Action: "Enroll", Target: "agent-3", Outcome: "ok", Details: `{"ip":"10.0.0.1"}`},
	}
	var last int64
	for i := range entries {
		id, err := s.AppendAudit(ctx, entries[i])
		must(t, "AppendAudit", err)
		if id <= last {
			t.Errorf("AppendAudit id %d not greater than previous %d", id, last)
		}
		last = id
		entries[i].ID = id
	}

	got, err = s.ListAudit(ctx, store.AuditFilter{})
	must(t, "ListAudit", err)
	want := []store.AuditEntry{entries[2], entries[1], entries[0], entries[3]}
	if len(got) != len(want) {
		t.Fatalf("ListAudit = %d entries, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.ID != w.ID || g.Actor != w.Actor || g.Action != w.Action || g.Target != w.Target ||
			g.Outcome != w.Outcome || g.Details != w.Details {
			t.Errorf("entry %d = %+v, want %+v", i, g, w)
		}
		checkTime(t, fmt.Sprintf("entry %d Time", i), g.Time, w.Time)
	}

	// A zero time is filled in rather than stored as the year 1.
	before := time.Now().Add(-time.Second)
	_, err = s.AppendAudit(ctx, store.AuditEntry{Actor: "x", Action: "y"})
	must(t, "AppendAudit zero time", err)
	got, err = s.ListAudit(ctx, store.AuditFilter{Since: before})
	must(t, "ListAudit since before", err)
	if len(got) != 1 || got[0].Action != "y" || got[0].Time.After(time.Now().Add(time.Second)) {
		t.Errorf("entry with zero time = %+v", got)
	}
}

func testAuditFilter(t *testing.T, s store.Store) {
	ctx := context.Background()
	for i := range 10 {
		_, err := s.AppendAudit(ctx, store.AuditEntry{
			Time:   base.Add(time.Duration(i) * time.Minute),
			Action: fmt.Sprint(i),
		})
		must(t, "AppendAudit", err)
	}
	actions := func(es []store.AuditEntry) string {
		var out []string
		for _, e := range es {
			out = append(out, e.Action)
		}
		return fmt.Sprint(out)
	}

	// Since is inclusive.
	got, err := s.ListAudit(ctx, store.AuditFilter{Since: base.Add(7 * time.Minute)})
	must(t, "ListAudit since", err)
	if a := actions(got); a != "[9 8 7]" {
		t.Errorf("since: %s, want [9 8 7]", a)
	}
	got, err = s.ListAudit(ctx, store.AuditFilter{Since: base.Add(7*time.Minute + time.Millisecond)})
	must(t, "ListAudit since+1ms", err)
	if a := actions(got); a != "[9 8]" {
		t.Errorf("since+1ms: %s, want [9 8]", a)
	}
	got, err = s.ListAudit(ctx, store.AuditFilter{Since: base.Add(time.Hour)})
	must(t, "ListAudit since future", err)
	if len(got) != 0 {
		t.Errorf("since future: %d entries", len(got))
	}

	// Limit keeps the newest entries.
	got, err = s.ListAudit(ctx, store.AuditFilter{Limit: 3})
	must(t, "ListAudit limit", err)
	if a := actions(got); a != "[9 8 7]" {
		t.Errorf("limit 3: %s, want [9 8 7]", a)
	}
	got, err = s.ListAudit(ctx, store.AuditFilter{Since: base.Add(2 * time.Minute), Limit: 2})
	must(t, "ListAudit since+limit", err)
	if a := actions(got); a != "[9 8]" {
		t.Errorf("since+limit: %s, want [9 8]", a)
	}
}

func testAuditLimit(t *testing.T, s store.Store) {
	ctx := context.Background()
	n := 150
	if !testing.Short() {
		n = 10_050 // enough to observe the 10000 cap
	}
	for i := range n {
		_, err := s.AppendAudit(ctx, store.AuditEntry{Time: base.Add(time.Duration(i) * time.Millisecond), Action: "a"})
		must(t, "AppendAudit", err)
	}
	for _, tc := range []struct{ limit, want int }{
		{0, 100},
		{-1, 100},
		{n + 1000, min(n, 10000)},
	} {
		got, err := s.ListAudit(ctx, store.AuditFilter{Limit: tc.limit})
		must(t, "ListAudit", err)
		if len(got) != tc.want {
			t.Errorf("Limit %d: %d entries, want %d", tc.limit, len(got), tc.want)
		}
	}
}

// testAuditPage: BeforeTime and BeforeID read on after an entry in the
// newest-first order, with ties on time broken by ID, and combine with
// Since and Limit.
func testAuditPage(t *testing.T, s store.Store) {
	ctx := context.Background()
	// Two entries per minute: IDs break the tie.
	for i := range 10 {
		_, err := s.AppendAudit(ctx, store.AuditEntry{Time: base.Add(time.Duration(i/2) * time.Minute), Action: fmt.Sprint(i)})
		must(t, "AppendAudit", err)
	}
	var read []string
	f := store.AuditFilter{Limit: 3}
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatalf("paging does not end: %v", read)
		}
		page, err := s.ListAudit(ctx, f)
		must(t, "ListAudit", err)
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			read = append(read, e.Action)
		}
		last := page[len(page)-1]
		f.BeforeTime, f.BeforeID = last.Time, last.ID
		if pages == 0 {
			// A new entry is newer than every page: not read again.
			_, err := s.AppendAudit(ctx, store.AuditEntry{Time: base.Add(time.Hour), Action: "new"})
			must(t, "AppendAudit", err)
		}
	}
	if want := "[9 8 7 6 5 4 3 2 1 0]"; fmt.Sprint(read) != want {
		t.Errorf("pages read %v, want %s", read, want)
	}
	all, err := s.ListAudit(ctx, store.AuditFilter{})
	must(t, "ListAudit", err)
	// all[0] is "new"; after entry "6" (base+3m) with Since base+2m: 5 4.
	var six store.AuditEntry
	for _, e := range all {
		if e.Action == "6" {
			six = e
		}
	}
	got, err := s.ListAudit(ctx, store.AuditFilter{Since: base.Add(2 * time.Minute), BeforeTime: six.Time, BeforeID: six.ID})
	must(t, "ListAudit since+before", err)
	var acts []string
	for _, e := range got {
		acts = append(acts, e.Action)
	}
	if fmt.Sprint(acts) != "[5 4]" {
		t.Errorf("since base+2m after 6: %v, want [5 4]", acts)
	}
}

func testProvisionState(t *testing.T, s store.Store) {
	ctx := context.Background()
	must(t, "CreateAgent", s.CreateAgent(ctx, sampleAgent("a1", "HOST-1")))
	got, err := s.GetAgent(ctx, "a1")
	must(t, "GetAgent", err)
	if got.ProvisionState != "" || !got.ProvisionUpdated.IsZero() {
		t.Fatalf("new agent has provision state %q at %v, want none", got.ProvisionState, got.ProvisionUpdated)
	}
	at := time.Date(2026, 11, 26, 10, 0, 0, 123e6, time.UTC)
	must(t, "SetProvisionState", s.SetProvisionState(ctx, "a1", "blocked", "BitLocker is on for C:", at))
	got, err = s.GetAgent(ctx, "a1")
	must(t, "GetAgent", err)
	if got.ProvisionState != "blocked" || got.ProvisionDetail != "BitLocker is on for C:" {
		t.Fatalf("provision state = %q %q", got.ProvisionState, got.ProvisionDetail)
	}
	checkTime(t, "ProvisionUpdated", got.ProvisionUpdated, at)
	// Other updates leave it alone.
	must(t, "TouchAgent", s.TouchAgent(ctx, "a1", at.Add(time.Minute)))
	list, err := s.ListAgents(ctx)
	must(t, "ListAgents", err)
	if list[0].ProvisionState != "blocked" {
		t.Fatalf("ListAgents lost the provision state: %+v", list[0])
	}
	wantErr(t, "SetProvisionState unknown", s.SetProvisionState(ctx, "nope", "ready", "", at), store.ErrNotFound)
}

func testArtifacts(t *testing.T, s store.Store) {
	ctx := context.Background()
	_, err := s.LatestArtifact(ctx, store.ArtifactDTraceMSI)
	wantErr(t, "LatestArtifact empty", err, store.ErrNotFound)
	_, err = s.GetArtifact(ctx, "00")
	wantErr(t, "GetArtifact missing", err, store.ErrNotFound)

	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	a := store.Artifact{SHA256: "aa", Kind: store.ArtifactDTraceMSI, Name: "DTrace.amd64.msi", Size: 100, Created: t0}
	b := store.Artifact{SHA256: "bb", Kind: store.ArtifactDTraceMSI, Name: "DTrace-2.msi", Size: 200, Created: t0.Add(time.Hour)}
	other := store.Artifact{SHA256: "cc", Kind: "other", Name: "x", Size: 1, Created: t0.Add(2 * time.Hour)}
	for _, x := range []store.Artifact{a, b, other} {
		must(t, "PutArtifact", s.PutArtifact(ctx, x))
	}
	got, err := s.LatestArtifact(ctx, store.ArtifactDTraceMSI)
	must(t, "LatestArtifact", err)
	if got.SHA256 != "bb" || got.Size != 200 || got.Name != "DTrace-2.msi" {
		t.Fatalf("LatestArtifact = %+v, want bb", got)
	}
	checkTime(t, "Created", got.Created, b.Created)
	// Uploading the older content again makes it the newest.
	a.Created = t0.Add(3 * time.Hour)
	must(t, "PutArtifact again", s.PutArtifact(ctx, a))
	got, err = s.LatestArtifact(ctx, store.ArtifactDTraceMSI)
	must(t, "LatestArtifact", err)
	if got.SHA256 != "aa" {
		t.Fatalf("LatestArtifact after re-upload = %s, want aa", got.SHA256)
	}
	got, err = s.GetArtifact(ctx, "cc")
	must(t, "GetArtifact", err)
	if got.Kind != "other" || got.Size != 1 {
		t.Fatalf("GetArtifact = %+v", got)
	}
}

func testCaptures(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	c := store.Capture{ID: "c1", Spec: `{"processes":["ms-teams.exe"]}`, State: "active", Created: t0, Expires: t0.Add(24 * time.Hour),
		CreatedBy: "operator/operator/alice", Rendered: "#pragma D option quiet", Statuses: `[{"input":"STATUS_INVALID_PARAMETER"}]`, Warnings: []string{"w"}}
	targets := []store.CaptureTarget{{AgentID: "a2", State: "pending", Updated: t0}, {AgentID: "a1", State: "pending", Updated: t0}}
	must(t, "CreateCapture", s.CreateCapture(ctx, c, targets))
	wantErr(t, "CreateCapture again", s.CreateCapture(ctx, c, nil), store.ErrConflict)
	older := c
	older.ID, older.Created, older.State = "c0", t0.Add(-time.Hour), "done"
	must(t, "CreateCapture c0", s.CreateCapture(ctx, older, nil))

	got, err := s.GetCapture(ctx, "c1")
	must(t, "GetCapture", err)
	if got.Spec != c.Spec || got.Rendered != c.Rendered || got.Statuses != c.Statuses || got.CreatedBy != c.CreatedBy || len(got.Warnings) != 1 {
		t.Fatalf("GetCapture = %+v", got)
	}
	checkTime(t, "Expires", got.Expires, c.Expires)
	_, err = s.GetCapture(ctx, "nope")
	wantErr(t, "GetCapture missing", err, store.ErrNotFound)

	all, err := s.ListCaptures(ctx, "")
	must(t, "ListCaptures", err)
	if len(all) != 2 || all[0].ID != "c1" {
		t.Fatalf("ListCaptures = %v, want c1 then c0", all)
	}
	active, err := s.ListCaptures(ctx, "active")
	must(t, "ListCaptures active", err)
	if len(active) != 1 || active[0].ID != "c1" {
		t.Fatalf("ListCaptures(active) = %v", active)
	}
	must(t, "SetCaptureState", s.SetCaptureState(ctx, "c1", "cancelled", "by alice"))
	got, _ = s.GetCapture(ctx, "c1")
	if got.State != "cancelled" || got.Detail != "by alice" {
		t.Fatalf("state = %q %q", got.State, got.Detail)
	}

	ts, err := s.ListTargets(ctx, "c1")
	must(t, "ListTargets", err)
	if len(ts) != 2 || ts[0].AgentID != "a1" || ts[1].State != "pending" {
		t.Fatalf("ListTargets = %+v", ts)
	}
	must(t, "SetTargetState", s.SetTargetState(ctx, "c1", "a1", "armed", "", t0.Add(time.Minute)))
	ts, _ = s.ListTargets(ctx, "c1")
	if ts[0].State != "armed" {
		t.Fatalf("target state %q", ts[0].State)
	}
	checkTime(t, "Updated", ts[0].Updated, t0.Add(time.Minute))
	wantErr(t, "SetTargetState missing", s.SetTargetState(ctx, "c1", "zz", "armed", "", t0), store.ErrNotFound)
}

func testEvents(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	must(t, "CreateCapture", s.CreateCapture(ctx, store.Capture{ID: "c1", Spec: "{}", State: "active", Created: t0, Expires: t0.Add(time.Hour)},
		[]store.CaptureTarget{{AgentID: "a1", State: "armed"}}))
	ev := func(id string, sec int) store.Event {
		return store.Event{ID: id, CaptureID: "c1", AgentID: "a1", Time: t0.Add(time.Duration(sec) * time.Second), PID: 4242, TID: 17,
			Process: "ms-teams.exe", Probe: "NtCreateFile:return", Status: 0xC000000D, User: `[{"module":"ntdll"}]`, Kernel: "[]", Signature: "sig"}
	}
	n, err := s.InsertEvents(ctx, []store.Event{ev("e1", 1), ev("e2", 2)})
	must(t, "InsertEvents", err)
	if n != 2 {
		t.Fatalf("inserted %d, want 2", n)
	}
	// A re-sent batch overlapping the first: only the new event counts.
	n, err = s.InsertEvents(ctx, []store.Event{ev("e2", 2), ev("e3", 3)})
	must(t, "InsertEvents again", err)
	if n != 1 {
		t.Fatalf("inserted %d on re-send, want 1", n)
	}
	got, err := s.ListEvents(ctx, "c1", 0, 0)
	must(t, "ListEvents", err)
	if len(got) != 3 || got[0].ID != "e1" || got[2].ID != "e3" || got[0].Status != 0xC000000D || got[0].User != `[{"module":"ntdll"}]` {
		t.Fatalf("ListEvents = %+v", got)
	}
	checkTime(t, "Time", got[1].Time, t0.Add(2*time.Second))
	seq, err := s.EventSeq(ctx, "e1")
	must(t, "EventSeq", err)
	after, err := s.ListEvents(ctx, "c1", seq, 1)
	must(t, "ListEvents after", err)
	if len(after) != 1 || after[0].ID != "e2" {
		t.Fatalf("ListEvents after e1 limit 1 = %+v", after)
	}
	_, err = s.EventSeq(ctx, "zz")
	wantErr(t, "EventSeq missing", err, store.ErrNotFound)
	ts, _ := s.ListTargets(ctx, "c1")
	if ts[0].Events != 3 {
		t.Fatalf("target counts %d events, want 3 (duplicates not counted)", ts[0].Events)
	}
}

func testDumps(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	d := store.Dump{ID: "d1", AgentID: "a1", CaptureID: "c1", EventID: "e1", FileName: "DTRACE-20261126-1000.dmp", Size: 100,
		State: "writing", Written: t0, Updated: t0, Signature: "sig"}
	must(t, "PutDump", s.PutDump(ctx, d))
	must(t, "SetDumpProgress", s.SetDumpProgress(ctx, "d1", 40, 10, "uploading", "", t0.Add(time.Second)))
	// The agent's next report must not reset the upload's progress; it
	// brings the facts of the dump's header.
	d.State, d.SHA256 = "hashed", "ab"
	d.DumpType, d.BugCheckCode, d.OSBuild, d.DeclaredSize = "full", 0xE2, 26100, 100
	must(t, "PutDump again", s.PutDump(ctx, d))
	got, err := s.GetDump(ctx, "d1")
	must(t, "GetDump", err)
	if got.Committed != 40 || got.Compressed != 10 || got.State != "hashed" || got.SHA256 != "ab" || got.FileName != d.FileName ||
		got.DumpType != "full" || got.BugCheckCode != 0xE2 || got.OSBuild != 26100 || got.DeclaredSize != 100 {
		t.Fatalf("GetDump = %+v", got)
	}
	// A report without header facts keeps the known ones.
	noFacts := d
	noFacts.DumpType, noFacts.BugCheckCode, noFacts.OSBuild, noFacts.DeclaredSize = "", 0, 0, 0
	must(t, "PutDump without header facts", s.PutDump(ctx, noFacts))
	if got, _ := s.GetDump(ctx, "d1"); got.DumpType != "full" || got.OSBuild != 26100 || got.DeclaredSize != 100 {
		t.Fatalf("header facts lost by a later report: %+v", got)
	}
	checkTime(t, "Written", got.Written, t0)
	_, err = s.GetDump(ctx, "zz")
	wantErr(t, "GetDump missing", err, store.ErrNotFound)
	wantErr(t, "SetDumpProgress missing", s.SetDumpProgress(ctx, "zz", 0, 0, "x", "", t0), store.ErrNotFound)

	for _, d := range []store.Dump{
		{ID: "d2", AgentID: "a2", CaptureID: "c1", State: "hashed", Written: t0.Add(time.Minute), Signature: "sig"},
		{ID: "d3", AgentID: "a2", CaptureID: "c2", State: "hashed", Written: t0.Add(2 * time.Minute), Signature: "sig"},
	} {
		must(t, "PutDump "+d.ID, s.PutDump(ctx, d))
		must(t, "SetDumpProgress "+d.ID, s.SetDumpProgress(ctx, d.ID, 0, 0, store.DumpUploaded, "", t0))
	}
	all, err := s.ListDumps(ctx, "")
	must(t, "ListDumps", err)
	if len(all) != 3 || all[0].ID != "d3" {
		t.Fatalf("ListDumps = %v", all)
	}
	c1, err := s.ListDumps(ctx, "c1")
	must(t, "ListDumps c1", err)
	if len(c1) != 2 || c1[0].ID != "d2" {
		t.Fatalf("ListDumps(c1) = %v", c1)
	}
	n, err := s.CountDumps(ctx, "c1", "sig", "uploaded")
	must(t, "CountDumps", err)
	if n != 1 {
		t.Fatalf("CountDumps = %d, want 1", n)
	}
	must(t, "MarkDumpPulled", s.MarkDumpPulled(ctx, "d1"))
	must(t, "PutDump after pull", s.PutDump(ctx, d))
	if got, _ := s.GetDump(ctx, "d1"); !got.Pulled {
		t.Fatal("pull not recorded, or reset by a later report")
	}
	wantErr(t, "MarkDumpPulled missing", s.MarkDumpPulled(ctx, "zz"), store.ErrNotFound)
}

// testDumpReportsCannotForge: what an agent reports (PutDump) never makes a
// dump uploaded, and never changes a hash and size once reported.
func testDumpReportsCannotForge(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	if err := s.PutDump(ctx, store.Dump{ID: "f1", AgentID: "a1", State: store.DumpUploaded, SHA256: "aa", Size: 10, Updated: t0}); err == nil {
		t.Fatal("PutDump with state uploaded succeeded")
	}
	if _, err := s.GetDump(ctx, "f1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused PutDump stored the dump: %v", err)
	}
	// While the file is written its size grows and there is no hash yet.
	d := store.Dump{ID: "f2", AgentID: "a1", State: "writing", Size: 5, Updated: t0}
	must(t, "PutDump writing", s.PutDump(ctx, d))
	d.Size, d.SHA256, d.State = 10, "aa", "hashed"
	must(t, "PutDump hashed", s.PutDump(ctx, d))
	d.Size, d.SHA256 = 99, "bb"
	must(t, "PutDump with another hash", s.PutDump(ctx, d))
	d.Size, d.SHA256, d.State = 0, "", "writing" // a re-hash starts again
	must(t, "PutDump without a hash", s.PutDump(ctx, d))
	got, err := s.GetDump(ctx, "f2")
	must(t, "GetDump", err)
	if got.SHA256 != "aa" || got.Size != 10 || got.State != "writing" {
		t.Fatalf("GetDump = %+v, want sha256 aa and size 10 kept", got)
	}
	must(t, "SetDumpProgress", s.SetDumpProgress(ctx, "f2", 10, 4, store.DumpUploaded, "", t0))
	d.State, d.Detail = "failed", "forged"
	must(t, "PutDump after upload", s.PutDump(ctx, d))
	if got, _ := s.GetDump(ctx, "f2"); got.State != store.DumpUploaded || got.Detail != "" || got.Committed != 10 {
		t.Fatalf("a report changed an uploaded dump: %+v", got)
	}
}

func testDumpBytes(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	for _, d := range []store.Dump{
		{ID: "b1", AgentID: "a1", State: "hashed", SHA256: "aa", Size: 100},
		{ID: "b2", AgentID: "a1", State: "hashed", SHA256: "bb", Size: 1000},
		{ID: "b3", AgentID: "a2", State: "hashed", SHA256: "cc", Size: 7},
		{ID: "b4", AgentID: "a2", State: "hashed", SHA256: "dd", Size: 1 << 40}, // announced, nothing received
	} {
		must(t, "PutDump "+d.ID, s.PutDump(ctx, d))
	}
	must(t, "SetDumpProgress b1", s.SetDumpProgress(ctx, "b1", 100, 50, store.DumpUploaded, "", t0))
	must(t, "SetDumpProgress b2", s.SetDumpProgress(ctx, "b2", 300, 50, "uploading", "", t0))
	must(t, "SetDumpProgress b3", s.SetDumpProgress(ctx, "b3", 7, 7, store.DumpUploaded, "", t0))
	for agent, want := range map[string]int64{"a1": 400, "a2": 7, "": 407, "nobody": 0} {
		got, err := s.DumpBytes(ctx, agent)
		must(t, "DumpBytes "+agent, err)
		if got != want {
			t.Errorf("DumpBytes(%q) = %d, want %d", agent, got, want)
		}
	}
}

func testStaleDumpUploads(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	for _, d := range []store.Dump{
		{ID: "s1", AgentID: "a1", State: "hashed", SHA256: "aa", Size: 100},
		{ID: "s2", AgentID: "a1", State: "hashed", SHA256: "bb", Size: 100},
		{ID: "s3", AgentID: "a1", State: "hashed", SHA256: "cc", Size: 100},
		{ID: "s4", AgentID: "a1", State: "hashed", SHA256: "dd", Size: 100},
	} {
		must(t, "PutDump "+d.ID, s.PutDump(ctx, d))
	}
	must(t, "SetDumpProgress s1", s.SetDumpProgress(ctx, "s1", 40, 10, "uploading", "", t0))                // stale
	must(t, "SetDumpProgress s2", s.SetDumpProgress(ctx, "s2", 40, 10, "uploading", "", t0.Add(time.Hour))) // fresh
	must(t, "SetDumpProgress s3", s.SetDumpProgress(ctx, "s3", 100, 10, store.DumpUploaded, "", t0))        // done
	must(t, "SetDumpProgress s4", s.SetDumpProgress(ctx, "s4", 0, 0, "uploading", "", t0))                  // nothing held
	cut := t0.Add(time.Minute)
	got, err := s.StaleDumpUploads(ctx, cut, 10)
	must(t, "StaleDumpUploads", err)
	if len(got) != 1 || got[0].ID != "s1" {
		t.Fatalf("StaleDumpUploads = %+v, want s1 only", got)
	}
	ok, err := s.ExpireDumpUpload(ctx, "s2", cut, "expired", cut)
	must(t, "ExpireDumpUpload s2", err)
	if ok {
		t.Fatal("ExpireDumpUpload expired an upload updated after the cut")
	}
	ok, err = s.ExpireDumpUpload(ctx, "s3", t0.Add(time.Hour), "expired", cut)
	must(t, "ExpireDumpUpload s3", err)
	if ok {
		t.Fatal("ExpireDumpUpload expired an uploaded dump")
	}
	ok, err = s.ExpireDumpUpload(ctx, "s1", cut, "partial upload expired", cut)
	must(t, "ExpireDumpUpload s1", err)
	if !ok {
		t.Fatal("ExpireDumpUpload did not expire a stale upload")
	}
	d, err := s.GetDump(ctx, "s1")
	must(t, "GetDump", err)
	if d.Committed != 0 || d.Compressed != 0 || d.State != "failed" || d.Detail != "partial upload expired" || d.SHA256 != "aa" {
		t.Fatalf("expired upload = %+v", d)
	}
	checkTime(t, "Updated", d.Updated, cut)
	if got, _ := s.StaleDumpUploads(ctx, t0.Add(24*time.Hour), 10); len(got) != 1 || got[0].ID != "s2" {
		t.Fatalf("StaleDumpUploads later = %+v, want s2 only", got)
	}
}

func testAgentMemory(t *testing.T, s store.Store) {
	ctx := context.Background()
	must(t, "CreateAgent", s.CreateAgent(ctx, sampleAgent("m1", "HOST-M1")))
	if n, err := s.AgentMemory(ctx, "m1"); err != nil || n != 0 {
		t.Fatalf("AgentMemory before a report = %d %v, want 0", n, err)
	}
	must(t, "SetAgentMemory", s.SetAgentMemory(ctx, "m1", 16<<30))
	if n, err := s.AgentMemory(ctx, "m1"); err != nil || n != 16<<30 {
		t.Fatalf("AgentMemory = %d %v", n, err)
	}
	wantErr(t, "SetAgentMemory missing", s.SetAgentMemory(ctx, "zz", 1), store.ErrNotFound)
	_, err := s.AgentMemory(ctx, "zz")
	wantErr(t, "AgentMemory missing", err, store.ErrNotFound)
}

func testGetTarget(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	must(t, "CreateCapture", s.CreateCapture(ctx, store.Capture{ID: "gt1", Spec: "{}", State: "active", Created: t0, Expires: t0.Add(time.Hour)},
		[]store.CaptureTarget{{CaptureID: "gt1", AgentID: "a1", State: "armed", Updated: t0}}))
	got, err := s.GetTarget(ctx, "gt1", "a1")
	must(t, "GetTarget", err)
	if got.CaptureID != "gt1" || got.AgentID != "a1" || got.State != "armed" {
		t.Fatalf("GetTarget = %+v", got)
	}
	_, err = s.GetTarget(ctx, "gt1", "a2")
	wantErr(t, "GetTarget of a non-target", err, store.ErrNotFound)
	_, err = s.GetTarget(ctx, "zz", "a1")
	wantErr(t, "GetTarget of an unknown capture", err, store.ErrNotFound)
}

func testAuditCertSerial(t *testing.T, s store.Store) {
	ctx := context.Background()
	_, err := s.AppendAudit(ctx, store.AuditEntry{Time: base, Actor: "operator/admin/alice", Action: "RevokeAgent", Outcome: "ok", CertSerial: "5eed01"})
	must(t, "AppendAudit", err)
	_, err = s.AppendAudit(ctx, store.AuditEntry{Time: base.Add(time.Second), Actor: "anonymous@10.0.0.1:1", Action: "Enroll", Outcome: "denied"})
	must(t, "AppendAudit without serial", err)
	got, err := s.ListAudit(ctx, store.AuditFilter{})
	must(t, "ListAudit", err)
	if len(got) != 2 || got[0].CertSerial != "" || got[1].CertSerial != "5eed01" {
		t.Fatalf("ListAudit serials = %+v, want \"\" then 5eed01", got)
	}
}

func checkOperatorCert(t *testing.T, got, want store.OperatorCert) {
	t.Helper()
	if got.Serial != want.Serial || got.Role != want.Role || got.Name != want.Name || got.RevokedBy != want.RevokedBy {
		t.Errorf("operator cert = %+v, want %+v", got, want)
	}
	checkTime(t, "Issued", got.Issued, want.Issued)
	checkTime(t, "NotBefore", got.NotBefore, want.NotBefore)
	checkTime(t, "NotAfter", got.NotAfter, want.NotAfter)
	checkTime(t, "FirstSeen", got.FirstSeen, want.FirstSeen)
	checkTime(t, "LastSeen", got.LastSeen, want.LastSeen)
	checkTime(t, "RevokedAt", got.RevokedAt, want.RevokedAt)
}

func sampleOperatorCert(serial, name string, issued time.Time) store.OperatorCert {
	return store.OperatorCert{
		Serial: serial, Role: "operator", Name: name, Issued: issued,
		NotBefore: issued.Add(-5 * time.Minute), NotAfter: issued.Add(30 * 24 * time.Hour),
	}
}

func testOperatorCertRecord(t *testing.T, s store.Store) {
	ctx := context.Background()
	got, err := s.ListOperatorCerts(ctx, 0)
	must(t, "ListOperatorCerts empty", err)
	if len(got) != 0 {
		t.Fatalf("ListOperatorCerts on an empty store = %+v", got)
	}
	// Issued but never used: no FirstSeen.
	older := sampleOperatorCert("0a01", "alice", base)
	must(t, "RecordOperatorCert issued", s.RecordOperatorCert(ctx, older))
	newer := sampleOperatorCert("0a02", "bob", base.Add(time.Hour))
	newer.FirstSeen, newer.LastSeen = base.Add(2*time.Hour), base.Add(2*time.Hour)
	must(t, "RecordOperatorCert seen", s.RecordOperatorCert(ctx, newer))

	// Seen again: LastSeen moves forward, never back; FirstSeen stays.
	again := newer
	again.FirstSeen, again.LastSeen = base.Add(3*time.Hour), base.Add(3*time.Hour)
	must(t, "RecordOperatorCert again", s.RecordOperatorCert(ctx, again))
	stale := newer
	stale.FirstSeen, stale.LastSeen = base.Add(time.Hour), base.Add(time.Hour)
	must(t, "RecordOperatorCert stale", s.RecordOperatorCert(ctx, stale))
	newer.LastSeen = base.Add(3 * time.Hour)
	// The issued one is seen for the first time.
	seen := older
	seen.FirstSeen, seen.LastSeen = base.Add(4*time.Hour), base.Add(4*time.Hour)
	must(t, "RecordOperatorCert first use", s.RecordOperatorCert(ctx, seen))

	got, err = s.ListOperatorCerts(ctx, 0)
	must(t, "ListOperatorCerts", err)
	if len(got) != 2 {
		t.Fatalf("ListOperatorCerts = %d rows, want 2", len(got))
	}
	checkOperatorCert(t, got[0], newer) // newest issued first
	checkOperatorCert(t, got[1], seen)
	if got, err := s.ListOperatorCerts(ctx, 1); err != nil || len(got) != 1 {
		t.Errorf("ListOperatorCerts limit 1 = %d rows (err %v)", len(got), err)
	}
	if _, revoked, err := s.OperatorCertRevocation(ctx, "0a01", "alice", base); err != nil || revoked {
		t.Errorf("OperatorCertRevocation of a certificate never revoked = %v (err %v)", revoked, err)
	}
}

func testOperatorCertRevokeSerial(t *testing.T, s store.Store) {
	ctx := context.Background()
	c := sampleOperatorCert("0b01", "carol", base)
	c.FirstSeen, c.LastSeen = base, base
	must(t, "RecordOperatorCert", s.RecordOperatorCert(ctx, c))
	other := sampleOperatorCert("0b02", "carol", base.Add(time.Minute))
	must(t, "RecordOperatorCert other", s.RecordOperatorCert(ctx, other))

	at := base.Add(time.Hour)
	got, err := s.RevokeOperatorCert(ctx, "0b01", at, "operator/admin/root")
	must(t, "RevokeOperatorCert", err)
	c.RevokedAt, c.RevokedBy = at, "operator/admin/root"
	checkOperatorCert(t, got, c)
	// Again: the first revocation's time and author stay.
	got, err = s.RevokeOperatorCert(ctx, "0b01", at.Add(time.Hour), "operator/admin/other")
	must(t, "RevokeOperatorCert again", err)
	checkOperatorCert(t, got, c)
	// Recording it again does not undo the revocation.
	c2 := c
	c2.RevokedAt, c2.RevokedBy = time.Time{}, ""
	c2.LastSeen = at.Add(2 * time.Hour)
	must(t, "RecordOperatorCert after revoke", s.RecordOperatorCert(ctx, c2))

	r, revoked, err := s.OperatorCertRevocation(ctx, "0b01", "carol", base)
	must(t, "OperatorCertRevocation", err)
	if !revoked || r.Serial != "0b01" || r.Name != "" || r.By != "operator/admin/root" {
		t.Errorf("OperatorCertRevocation = %+v, %v; want revoked by serial", r, revoked)
	}
	checkTime(t, "revocation At", r.At, at)
	// The other certificate of the same name is unaffected.
	if _, revoked, err := s.OperatorCertRevocation(ctx, "0b02", "carol", other.Issued); err != nil || revoked {
		t.Errorf("another certificate of the same name revoked = %v (err %v)", revoked, err)
	}

	// A serial never seen can be revoked, and is refused when it shows up;
	// recording it later fills in who it belongs to.
	got, err = s.RevokeOperatorCert(ctx, "0b03", at, "operator/admin/root")
	must(t, "RevokeOperatorCert unseen", err)
	checkOperatorCert(t, got, store.OperatorCert{Serial: "0b03", RevokedAt: at, RevokedBy: "operator/admin/root"})
	if _, revoked, err := s.OperatorCertRevocation(ctx, "0b03", "dave", base); err != nil || !revoked {
		t.Errorf("unseen revoked serial: revoked = %v (err %v)", revoked, err)
	}
	late := sampleOperatorCert("0b03", "dave", base)
	must(t, "RecordOperatorCert unseen", s.RecordOperatorCert(ctx, late))
	list, err := s.ListOperatorCerts(ctx, 0)
	must(t, "ListOperatorCerts", err)
	for _, g := range list {
		if g.Serial == "0b03" {
			late.RevokedAt, late.RevokedBy = at, "operator/admin/root"
			checkOperatorCert(t, g, late)
		}
	}
}

// testOperatorCertRevokedBoth: a certificate revoked by serial and by name
// reports the revocation of its serial; one of the name never seen reports
// the name's.
func testOperatorCertRevokedBoth(t *testing.T, s store.Store) {
	ctx := context.Background()
	must(t, "RecordOperatorCert", s.RecordOperatorCert(ctx, sampleOperatorCert("0d01", "gina", base)))
	bySerial, byName := base.Add(time.Hour), base.Add(2*time.Hour)
	_, err := s.RevokeOperatorCert(ctx, "0d01", bySerial, "operator/admin/a")
	must(t, "RevokeOperatorCert", err)
	_, err = s.RevokeOperatorName(ctx, "gina", byName, "operator/admin/b")
	must(t, "RevokeOperatorName", err)

	r, revoked, err := s.OperatorCertRevocation(ctx, "0d01", "gina", base)
	must(t, "OperatorCertRevocation", err)
	if !revoked || r.Serial != "0d01" || r.Name != "" || r.By != "operator/admin/a" {
		t.Errorf("OperatorCertRevocation = %+v, %v; want revoked by serial, by operator/admin/a", r, revoked)
	}
	checkTime(t, "serial revocation At", r.At, bySerial)

	r, revoked, err = s.OperatorCertRevocation(ctx, "0d02", "gina", base)
	must(t, "OperatorCertRevocation unseen", err)
	if !revoked || r.Name != "gina" || r.Serial != "" || r.By != "operator/admin/b" {
		t.Errorf("OperatorCertRevocation unseen = %+v, %v; want revoked by name, by operator/admin/b", r, revoked)
	}
	checkTime(t, "name revocation At", r.At, byName)
}

func testOperatorCertRevokeName(t *testing.T, s store.Store) {
	ctx := context.Background()
	before := sampleOperatorCert("0c01", "erin", base)
	must(t, "RecordOperatorCert", s.RecordOperatorCert(ctx, before))
	otherName := sampleOperatorCert("0c02", "frank", base)
	must(t, "RecordOperatorCert other", s.RecordOperatorCert(ctx, otherName))

	at := base.Add(time.Hour)
	n, err := s.RevokeOperatorName(ctx, "erin", at, "operator/admin/root")
	must(t, "RevokeOperatorName", err)
	if n != 1 {
		t.Errorf("RevokeOperatorName marked %d certificates, want 1", n)
	}
	// Recorded, never seen, and issued after the revocation.
	for _, tc := range []struct {
		serial string
		issued time.Time
		want   bool
	}{
		{"0c01", base, true},
		{"0c09", base.Add(30 * time.Minute), true}, // never seen, issued before
		{"0c10", at.Add(time.Second), false},       // issued after: a new certificate
	} {
		r, revoked, err := s.OperatorCertRevocation(ctx, tc.serial, "erin", tc.issued)
		must(t, "OperatorCertRevocation", err)
		if revoked != tc.want {
			t.Errorf("serial %s issued %v: revoked = %v, want %v", tc.serial, tc.issued, revoked, tc.want)
		}
		if revoked && (r.Name != "erin" && r.Serial == "") {
			t.Errorf("serial %s: revocation %+v names neither the name nor the serial", tc.serial, r)
		}
	}
	if _, revoked, err := s.OperatorCertRevocation(ctx, "0c02", "frank", base); err != nil || revoked {
		t.Errorf("another name revoked = %v (err %v)", revoked, err)
	}
	list, err := s.ListOperatorCerts(ctx, 0)
	must(t, "ListOperatorCerts", err)
	for _, g := range list {
		if g.Serial == "0c01" {
			checkTime(t, "RevokedAt of a name-revoked certificate", g.RevokedAt, at)
		}
		if g.Serial == "0c02" && !g.RevokedAt.IsZero() {
			t.Errorf("certificate of another name marked revoked: %+v", g)
		}
	}
	// An earlier revocation of the name does not move the cut-off back.
	_, err = s.RevokeOperatorName(ctx, "erin", base.Add(-time.Hour), "operator/admin/root")
	must(t, "RevokeOperatorName earlier", err)
	if _, revoked, err := s.OperatorCertRevocation(ctx, "0c09", "erin", base.Add(30*time.Minute)); err != nil || !revoked {
		t.Errorf("an earlier revocation undid a later one: revoked = %v (err %v)", revoked, err)
	}
	// A later one moves it forward.
	_, err = s.RevokeOperatorName(ctx, "erin", at.Add(time.Hour), "operator/admin/root")
	must(t, "RevokeOperatorName later", err)
	if _, revoked, err := s.OperatorCertRevocation(ctx, "0c10", "erin", at.Add(time.Second)); err != nil || !revoked {
		t.Errorf("a later revocation did not cover a certificate issued before it: revoked = %v (err %v)", revoked, err)
	}
}

// testAgentHistory: one agent's captures (newest first, bounded) and dumps
// (newest written first, unwritten last, bounded), never another agent's.
func testAgentHistory(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	for i, id := range []string{"c1", "c3", "c2"} {
		created := t0.Add(time.Duration(map[string]int{"c1": 1, "c2": 2, "c3": 3}[id]) * time.Hour)
		targets := []store.CaptureTarget{{AgentID: "a1", State: "armed", Updated: created}}
		if i != 1 {
			targets = append(targets, store.CaptureTarget{AgentID: "a2", State: "pending", Updated: created})
		}
		must(t, "CreateCapture "+id, s.CreateCapture(ctx, store.Capture{ID: id, Spec: "{}", State: "active", Created: created, Expires: created.Add(time.Hour)}, targets))
	}
	ts, err := s.ListAgentTargets(ctx, "a1", 0)
	must(t, "ListAgentTargets", err)
	if len(ts) != 3 || ts[0].CaptureID != "c3" || ts[1].CaptureID != "c2" || ts[2].CaptureID != "c1" || ts[0].AgentID != "a1" || ts[0].State != "armed" {
		t.Fatalf("ListAgentTargets(a1) = %+v, want c3, c2, c1", ts)
	}
	ts, err = s.ListAgentTargets(ctx, "a1", 2)
	must(t, "ListAgentTargets limit", err)
	if len(ts) != 2 || ts[1].CaptureID != "c2" {
		t.Fatalf("ListAgentTargets(a1, 2) = %+v", ts)
	}
	ts, err = s.ListAgentTargets(ctx, "a2", 0)
	must(t, "ListAgentTargets a2", err)
	if len(ts) != 2 || ts[0].CaptureID != "c2" || ts[0].AgentID != "a2" {
		t.Fatalf("ListAgentTargets(a2) = %+v", ts)
	}
	if ts, err := s.ListAgentTargets(ctx, "nobody", 0); err != nil || len(ts) != 0 {
		t.Fatalf("ListAgentTargets(nobody) = %+v, %v", ts, err)
	}

	for _, d := range []store.Dump{
		{ID: "d1", AgentID: "a1", CaptureID: "c1", State: "hashed", Written: t0.Add(time.Minute)},
		{ID: "d2", AgentID: "a1", CaptureID: "c2", State: "hashed", Written: t0.Add(3 * time.Minute)},
		{ID: "d3", AgentID: "a1", CaptureID: "c2", State: "writing"},
		{ID: "d4", AgentID: "a2", CaptureID: "c2", State: "hashed", Written: t0.Add(4 * time.Minute)},
	} {
		must(t, "PutDump "+d.ID, s.PutDump(ctx, d))
	}
	ds, err := s.ListAgentDumps(ctx, "a1", 0)
	must(t, "ListAgentDumps", err)
	if len(ds) != 3 || ds[0].ID != "d2" || ds[1].ID != "d1" || ds[2].ID != "d3" {
		t.Fatalf("ListAgentDumps(a1) = %+v, want d2, d1, d3", ds)
	}
	ds, err = s.ListAgentDumps(ctx, "a1", 1)
	must(t, "ListAgentDumps limit", err)
	if len(ds) != 1 || ds[0].ID != "d2" {
		t.Fatalf("ListAgentDumps(a1, 1) = %+v", ds)
	}
}
