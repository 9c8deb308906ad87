package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// pageOf is how the fake pages a list: everything at once, or, when paged,
// one item per page with the next token "p<index>".
func pageOf[T any](f *fakeFleet, items []T, after string) ([]T, string) {
	f.mu.Lock()
	paged := f.paged
	f.mu.Unlock()
	if !paged {
		return items, ""
	}
	i := 0
	if after != "" {
		if _, err := fmt.Sscanf(after, "p%d", &i); err != nil {
			return nil, ""
		}
	}
	if i >= len(items) {
		return nil, ""
	}
	next := ""
	if i+1 < len(items) {
		next = fmt.Sprintf("p%d", i+1)
	}
	return items[i : i+1], next
}

func (f *fakeFleet) setPaged(p bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.paged = p
}

func (f *fakeFleet) dumps() []*livedumpv1.Dump {
	return []*livedumpv1.Dump{
		{Id: "0123456789abcdef", AgentId: "ws-0001", Hostname: "WS-0001", CaptureId: "c-1", FileName: "DTRACE-1.dmp", Size: 1 << 30,
			State: livedumpv1.DumpState_DUMP_STATE_UPLOADED, Sha256: strings.Repeat("a", 64), Written: ts(f.now.Add(-time.Hour))},
		{Id: "fedcba9876543210", AgentId: "ws-0002", Hostname: "WS-0002", CaptureId: "c-1", FileName: "DTRACE-2.dmp", Size: 2 << 30,
			State: livedumpv1.DumpState_DUMP_STATE_HASH_ONLY, Written: ts(f.now.Add(-2 * time.Hour))},
		{Id: "00000000000000aa", AgentId: "ws-0001", Hostname: "WS-0001", CaptureId: "c-2", FileName: "DTRACE-3.dmp", Size: 3 << 30,
			State: livedumpv1.DumpState_DUMP_STATE_UPLOADED, Written: ts(f.now.Add(-3 * time.Hour)),
			DumpType: "full", BugCheckCode: 0xE2, OsBuild: 26100, DeclaredSize: 3 << 30},
		{Id: "00000000000000bb", AgentId: "ws-0001", Hostname: "WS-0001", CaptureId: "c-2", FileName: "DTRACE-4.dmp", Size: 1 << 30,
			State: livedumpv1.DumpState_DUMP_STATE_TRUNCATED, Detail: "truncated: the file has 1073741824 of the 3221225472 bytes its header declares",
			Written: ts(f.now.Add(-4 * time.Hour)), DumpType: "full", BugCheckCode: 0xE2, OsBuild: 26100, DeclaredSize: 3 << 30},
	}
}

// TestDumpsListShowsHeaderFacts: -o json carries the facts of each dump's
// own header, and the table names the truncated state.
func TestDumpsListShowsHeaderFacts(t *testing.T) {
	startController(t)
	out := runOK(t, "dumps", "list", "-o", "json")
	for _, want := range []string{`"dump_type": "full"`, `"bug_check_code": 226`, `"os_build": 26100`, `"declared_size": "3221225472"`, `"state": "DUMP_STATE_TRUNCATED"`} {
		if !strings.Contains(out, want) {
			t.Fatalf("dumps list -o json lacks %s:\n%s", want, out)
		}
	}
	if table := runOK(t, "dumps", "list"); !strings.Contains(table, "truncated") {
		t.Fatalf("table:\n%s", table)
	}
}

func (f *fakeFleet) ListDumps(ctx context.Context, req *livedumpv1.ListDumpsRequest) (*livedumpv1.ListDumpsResponse, error) {
	if err := f.record(ctx, "ListDumps", req); err != nil {
		return nil, err
	}
	if req.GetCaptureId() == uploadingCapture {
		return &livedumpv1.ListDumpsResponse{Dumps: uploads.next()}, nil // capture_watch_test.go
	}
	ds, next := pageOf(f, f.listedDumps(req.GetCaptureId()), req.GetAfter())
	return &livedumpv1.ListDumpsResponse{Dumps: ds, Next: next}, nil
}

func (f *fakeFleet) capture(id string) *livedumpv1.Capture {
	c := &livedumpv1.Capture{Id: id, State: livedumpv1.CaptureState_CAPTURE_STATE_ACTIVE, Created: ts(f.now.Add(-time.Hour)),
		Expires: ts(f.now.Add(time.Hour)), CreatedBy: "operator/operator/test", Events: 7,
		Spec: &livedumpv1.CaptureSpec{Selector: "site=lab", Processes: []string{"app.exe"}, Statuses: []string{"0xC0000022"}}}
	for i, host := range []string{"WS-0001", "WS-0002", "WS-0003"} {
		c.Targets = append(c.Targets, &livedumpv1.CaptureTarget{AgentId: fmt.Sprintf("ws-000%d", i+1), Hostname: host,
			State: livedumpv1.TargetState_TARGET_STATE_ARMED, Events: int64(i), Updated: ts(f.now.Add(-time.Minute))})
	}
	c.TargetCounts = map[string]int64{"armed": 3} // every target, listed or not, as the controller counts them
	return c
}

func (f *fakeFleet) ListCaptures(ctx context.Context, req *livedumpv1.ListCapturesRequest) (*livedumpv1.ListCapturesResponse, error) {
	if err := f.record(ctx, "ListCaptures", req); err != nil {
		return nil, err
	}
	cs := []*livedumpv1.Capture{f.capture("c-2"), f.capture("c-1")}
	cs, next := pageOf(f, cs, req.GetAfter())
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.paged && len(cs) == 1 {
		// A capture too large for a page lists its first target only.
		cs[0].OmittedTargets = int64(len(cs[0].Targets) - 1)
		cs[0].Targets = cs[0].Targets[:1]
	}
	return &livedumpv1.ListCapturesResponse{Captures: cs, Next: next}, nil
}

func (f *fakeFleet) GetCapture(ctx context.Context, req *livedumpv1.GetCaptureRequest) (*livedumpv1.GetCaptureResponse, error) {
	if err := f.record(ctx, "GetCapture", req); err != nil {
		return nil, err
	}
	if req.GetId() != "c-1" {
		return nil, status.Errorf(codes.NotFound, "capture %s not found", req.GetId())
	}
	c := f.capture("c-1")
	all := len(c.Targets)
	var next string
	c.Targets, next = pageOf(f, c.Targets, req.GetAfter())
	c.OmittedTargets = int64(all - len(c.Targets))
	return &livedumpv1.GetCaptureResponse{Capture: c, Next: next}, nil
}

func (f *fakeFleet) CancelCapture(ctx context.Context, req *livedumpv1.CancelCaptureRequest) (*livedumpv1.CancelCaptureResponse, error) {
	if err := f.record(ctx, "CancelCapture", req); err != nil {
		return nil, err
	}
	c := f.capture(req.GetId())
	f.mu.Lock()
	if f.paged {
		c.OmittedTargets, c.Targets = int64(len(c.Targets)-1), c.Targets[:1]
	}
	f.mu.Unlock()
	return &livedumpv1.CancelCaptureResponse{Capture: c}, nil
}

// TestListsFollowPages: every list command reads the controller's pages one
// after another and prints exactly what it printed when the controller
// answered in one piece, in tables and in JSON.
func TestListsFollowPages(t *testing.T) {
	tc := startController(t)
	for _, args := range [][]string{
		{"agents", "list"},
		{"agents", "list", "-o", "json"},
		{"agents", "list", "-o", "prometheus-sd"},
		{"tokens", "list"},
		{"tokens", "list", "-o", "json"},
		{"audit", "list"},
		{"audit", "list", "-o", "json"},
		{"dumps", "list"},
		{"dumps", "list", "-o", "json"},
		{"capture", "list"},
		{"capture", "get", "c-1"},
		{"capture", "get", "c-1", "-o", "json"},
		{"capture", "cancel", "c-1"},
		{"capture", "cancel", "c-1", "-o", "json"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			tc.fake.setPaged(false)
			tc.fake.reset()
			whole := runOK(t, args...)
			unpagedCalls := len(tc.fake.received())
			tc.fake.setPaged(true)
			tc.fake.reset()
			paged := runOK(t, args...)
			if paged != whole {
				t.Fatalf("paged output differs:\n--- one piece\n%s\n--- pages\n%s", whole, paged)
			}
			if calls := len(tc.fake.received()); calls <= unpagedCalls {
				t.Fatalf("%d calls paged, %d in one piece: the pages were not followed", calls, unpagedCalls)
			}
		})
	}
}

// TestCaptureListCountsOmittedTargets: a capture listed with part of its
// targets shows the full count.
func TestCaptureListCountsOmittedTargets(t *testing.T) {
	tc := startController(t)
	tc.fake.setPaged(true)
	out := runOK(t, "capture", "list")
	rows := tableRows(out)
	if len(rows) != 3 {
		t.Fatalf("%d rows:\n%s", len(rows), out)
	}
	for _, r := range rows[1:] {
		if r[7] != "3" || r[8] != "3" { // "1h ago" and "in 1h" are two cells each
			t.Fatalf("TARGETS %q ARMED %q, want 3 and 3:\n%s", r[7], r[8], out)
		}
	}
}

// TestAuditListLimitAcrossPages: --limit counts entries over all pages, and
// each page asks only for what is still missing.
func TestAuditListLimitAcrossPages(t *testing.T) {
	tc := startController(t)
	tc.fake.setPaged(true)
	out := runOK(t, "audit", "list", "--limit", "1")
	if got := len(tableRows(out)) - 1; got != 1 {
		t.Fatalf("%d rows, want 1:\n%s", got, out)
	}
	if calls := tc.fake.received(); len(calls) != 1 {
		t.Fatalf("%d calls for --limit 1, want 1", len(calls))
	}
	tc.fake.reset()
	runOK(t, "audit", "list", "--limit", "5")
	calls := tc.fake.received()
	if len(calls) != 2 {
		t.Fatalf("%d calls, want 2 pages", len(calls))
	}
	if r := calls[1].req.(*livedumpv1.ListAuditRequest); r.GetLimit() != 4 || r.GetAfter() != "p1" {
		t.Fatalf("second page: limit %d after %q, want 4 and p1", r.GetLimit(), r.GetAfter())
	}
}
