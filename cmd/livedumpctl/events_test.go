package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// fakeEvents is how many events the fake's capture holds, served in pages of
// at most 3 (as a size budget would cut them).
const fakeEvents = 8

func (f *fakeFleet) ListEvents(ctx context.Context, req *livedumpv1.ListEventsRequest) (*livedumpv1.ListEventsResponse, error) {
	if err := f.record(ctx, "ListEvents", req); err != nil {
		return nil, err
	}
	start := 0
	if req.GetAfter() != "" {
		if _, err := fmt.Sscanf(req.GetAfter(), "ev-%d", &start); err != nil {
			return nil, err
		}
		start++
	}
	resp := &livedumpv1.ListEventsResponse{}
	for i := start; i < fakeEvents && len(resp.Events) < min(3, int(req.GetLimit())); i++ {
		resp.Events = append(resp.Events, fakeEvent(f, req.GetCaptureId(), i))
	}
	if n := len(resp.Events); n > 0 && start+n < fakeEvents {
		resp.Next = resp.Events[n-1].GetId()
	}
	return resp, nil
}

// fakeEvent is event i of the fake's capture: the even ones from WS-0001
// (app!Open, with a kernel stack), the odd ones from WS-0002 (app!Save,
// without).
func fakeEvent(f *fakeFleet, captureID string, i int) *livedumpv1.TriggerEvent {
	ev := &livedumpv1.TriggerEvent{Id: fmt.Sprintf("ev-%d", i), CaptureId: captureID, AgentId: "ws-0001", Hostname: "WS-0001",
		Process: "app.exe", Pid: int32(100 + i), Time: ts(f.now),
		UserFrames:   []*livedumpv1.Frame{{Module: "ntdll", Function: "NtCreateFile", Offset: 0x14}, {Module: "app", Function: "Open", Offset: 0x2b}, {Module: "app", Function: "Main", Offset: 0x10}},
		KernelFrames: []*livedumpv1.Frame{{Module: "nt", Function: "KiSystemServiceCopyEnd", Offset: 0x25}},
	}
	if i%2 == 1 {
		ev.AgentId, ev.Hostname, ev.KernelFrames = "ws-0002", "WS-0002", nil
		ev.UserFrames[1] = &livedumpv1.Frame{Module: "app", Function: "Save", Offset: 0x40}
	}
	return ev
}

// TestEventsListFollowsPages: events list reads page after page until the
// controller says there is no more, or --limit is reached.
func TestEventsListFollowsPages(t *testing.T) {
	tc := startController(t)
	out := runOK(t, "events", "list", "--capture", "c-1")
	if got := len(tableRows(out)) - 1; got != fakeEvents {
		t.Fatalf("%d rows, want %d:\n%s", got, fakeEvents, out)
	}
	calls := tc.fake.received()
	if len(calls) != 3 {
		t.Fatalf("%d calls, want 3 pages", len(calls))
	}
	if after := calls[1].req.(*livedumpv1.ListEventsRequest).GetAfter(); after != "ev-2" {
		t.Fatalf("second page after %q, want ev-2", after)
	}

	tc.fake.reset()
	out = runOK(t, "events", "list", "--capture", "c-1", "--limit", "4", "-o", "json")
	var resp livedumpv1.ListEventsResponse
	if err := protojson.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.GetEvents()) != 4 || resp.GetNext() != "ev-3" {
		t.Fatalf("--limit 4: %d events, next %q", len(resp.GetEvents()), resp.GetNext())
	}

	code, _, stderr := runCLI(t, "events", "list", "--capture", "c-1", "--limit", "0")
	if code != exitUsage || !strings.Contains(stderr, "--limit") {
		t.Fatalf("--limit 0: exit %d, %q", code, stderr)
	}
}
