package api

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/controller/capture"
	"github.com/livedump/livedump/controller/store"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

const capID = "cap-0001"

// storeCapture stores a capture row, which ListEvents and BucketEvents
// look up before reading events.
func storeCapture(t *testing.T, r *rig, id string) {
	t.Helper()
	if err := r.st.CreateCapture(context.Background(), store.Capture{ID: id, Spec: "{}", State: "active", Created: t0, Expires: t0.Add(time.Hour)}, nil); err != nil {
		t.Fatal(err)
	}
}

func event(i int, agent, host, fn string) *livedumpv1.TriggerEvent {
	return &livedumpv1.TriggerEvent{Id: fmt.Sprintf("ev-%04d", i), CaptureId: capID, AgentId: agent, Hostname: host,
		Time: timestamppb.New(t0.Add(time.Duration(i) * time.Second)), Probe: "syscall::NtOpenFile:return",
		KernelFrames: []*livedumpv1.Frame{{Module: "nt", Function: fn}}}
}

func TestCreateCapture(t *testing.T) {
	r := newRig(t, false)
	spec := &livedumpv1.CaptureSpec{Selector: "site=ber"}
	for _, tc := range []struct {
		id    string
		admin bool
	}{{operator.String(), false}, {admin.String(), true}} {
		id := operator
		if tc.admin {
			id = admin
		}
		ctx, rec := as(id)
		resp, err := r.fleet.CreateCapture(ctx, &livedumpv1.CreateCaptureRequest{Spec: spec})
		if err != nil {
			t.Fatal(err)
		}
		got := r.caps.Created()
		req := got[len(got)-1]
		if req.Actor != tc.id || req.Admin != tc.admin || req.Spec.GetSelector() != "site=ber" {
			t.Fatalf("manager got %+v", req)
		}
		if resp.GetCapture().GetId() == "" || rec.target != resp.GetCapture().GetId() {
			t.Fatalf("capture %v, audit target %q", resp.GetCapture(), rec.target)
		}
	}
	// The manager's field errors name the field; others are not leaked.
	for _, tc := range []struct {
		err   error
		code  codes.Code
		field string
	}{
		{&capture.FieldError{Field: "spec.probe", Reason: "unknown probe"}, codes.InvalidArgument, "spec.probe: unknown probe"},
		{fmt.Errorf("wrapped: %w", &capture.FieldError{Field: "spec.selector", Reason: "empty"}), codes.InvalidArgument, "spec.selector: empty"},
		{errors.New("database is locked"), codes.Internal, "create capture failed"},
		{&capture.CatchesNothingError{Selector: "role=vid", Message: `selector "role=vid" matches no machine`}, codes.FailedPrecondition, `selector "role=vid" matches no machine`},
	} {
		r.caps.Err = tc.err
		_, err := r.fleet.CreateCapture(ctxAs(operator), &livedumpv1.CreateCaptureRequest{Spec: spec})
		wantCode(t, err, tc.code, tc.field)
	}
}

// TestCreateCaptureDryRun: a dry run reaches the manager as one, with
// force; it answers with the preview alone, and its audit entry is marked.
func TestCreateCaptureDryRun(t *testing.T) {
	r := newRig(t, false)
	ctx, rec := as(operator)
	resp, err := r.fleet.CreateCapture(ctx, &livedumpv1.CreateCaptureRequest{Spec: &livedumpv1.CaptureSpec{Selector: "site=ber"}, DryRun: true, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	got := r.caps.Created()
	if req := got[len(got)-1]; !req.DryRun || !req.Force {
		t.Fatalf("manager got %+v", req)
	}
	if resp.GetCapture() != nil || resp.GetPreview().GetSelector() != "site=ber" || rec.target != capture.DryRunID {
		t.Fatalf("response %v, audit target %q", resp, rec.target)
	}
}

// TestCreateCaptureTrimsTargets checks that a capture over more machines
// than a page holds goes out trimmed, the rest counted.
func TestCreateCaptureTrimsTargets(t *testing.T) {
	r := newRig(t, false)
	r.fleet.cfg.PageBytes = 2048
	resp, err := r.fleet.CreateCapture(ctxAs(operator), &livedumpv1.CreateCaptureRequest{Spec: &livedumpv1.CaptureSpec{Selector: "a=b"}})
	if err != nil {
		t.Fatal(err)
	}
	// The fake's capture has no targets: nothing to omit.
	if resp.GetCapture().GetOmittedTargets() != 0 {
		t.Fatal("targets omitted from an empty capture")
	}
	c := &livedumpv1.Capture{Id: "cap-big", State: livedumpv1.CaptureState_CAPTURE_STATE_ACTIVE}
	for i := range 200 {
		c.Targets = append(c.Targets, &livedumpv1.CaptureTarget{AgentId: fmt.Sprintf("%016x", i), Hostname: fmt.Sprintf("WS-%03d", i)})
	}
	r.caps.Add(c)
	cr, err := r.fleet.CancelCapture(ctxAs(operator), &livedumpv1.CancelCaptureRequest{Id: "cap-big"})
	if err != nil {
		t.Fatal(err)
	}
	if n := int64(len(cr.GetCapture().GetTargets())); n == 0 || n == 200 || n+cr.GetCapture().GetOmittedTargets() != 200 {
		t.Fatalf("%d targets sent, %d omitted", n, cr.GetCapture().GetOmittedTargets())
	}
}

func TestCaptureIDsValidated(t *testing.T) {
	r := newRig(t, false)
	for _, id := range []string{"", "ab", "CAP-1", "cap/../x", string(make([]byte, 65))} {
		_, err := r.fleet.GetCapture(ctxAs(viewer), &livedumpv1.GetCaptureRequest{Id: id})
		wantCode(t, err, codes.InvalidArgument, "id: ")
		_, err = r.fleet.CancelCapture(ctxAs(operator), &livedumpv1.CancelCaptureRequest{Id: id})
		wantCode(t, err, codes.InvalidArgument, "id: ")
		_, err = r.fleet.ListEvents(ctxAs(viewer), &livedumpv1.ListEventsRequest{CaptureId: id})
		wantCode(t, err, codes.InvalidArgument, "id: ")
		_, err = r.fleet.BucketEvents(ctxAs(viewer), &livedumpv1.BucketEventsRequest{CaptureId: id})
		wantCode(t, err, codes.InvalidArgument, "id: ")
		err = r.fleet.WatchCapture(&livedumpv1.WatchCaptureRequest{Id: id}, &sendStream[livedumpv1.WatchCaptureResponse]{serverStream: serverStream{ctx: ctxAs(viewer)}})
		wantCode(t, err, codes.InvalidArgument, "id: ")
	}
	if len(r.caps.Canceled()) != 0 || r.caps.Watchers("") != 0 {
		t.Fatal("an invalid ID reached the manager")
	}
}

func TestGetAndCancelCapture(t *testing.T) {
	r := newRig(t, false)
	r.caps.TargetsPerPage = 2
	c := &livedumpv1.Capture{Id: capID, State: livedumpv1.CaptureState_CAPTURE_STATE_ACTIVE}
	for _, a := range []string{agentA, agentB, agentC} {
		c.Targets = append(c.Targets, &livedumpv1.CaptureTarget{AgentId: a})
	}
	r.caps.Add(c)

	resp, err := r.fleet.GetCapture(ctxAs(viewer), &livedumpv1.GetCaptureRequest{Id: capID})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetCapture().GetTargets()) != 2 || resp.GetNext() == "" {
		t.Fatalf("first page %v", resp)
	}
	resp, err = r.fleet.GetCapture(ctxAs(viewer), &livedumpv1.GetCaptureRequest{Id: capID, After: resp.GetNext()})
	if err != nil || len(resp.GetCapture().GetTargets()) != 1 || resp.GetCapture().GetTargets()[0].GetAgentId() != agentC || resp.GetNext() != "" {
		t.Fatalf("second page %v %v", resp, err)
	}
	if b := r.caps.Budgets(); b[0] != defaultPageBytes {
		t.Fatalf("budget %d passed, want the server's %d", b[0], defaultPageBytes)
	}
	_, err = r.fleet.GetCapture(ctxAs(viewer), &livedumpv1.GetCaptureRequest{Id: capID, After: encodeCursor("GetCapture", "a", "b")})
	wantCode(t, err, codes.InvalidArgument, "after: not a page token of GetCapture")
	_, err = r.fleet.GetCapture(ctxAs(viewer), &livedumpv1.GetCaptureRequest{Id: "cap-none"})
	wantCode(t, err, codes.NotFound, "capture cap-none: capture not found")

	ctx, rec := as(operator)
	cr, err := r.fleet.CancelCapture(ctx, &livedumpv1.CancelCaptureRequest{Id: capID})
	if err != nil || cr.GetCapture().GetState() != livedumpv1.CaptureState_CAPTURE_STATE_CANCELLED || rec.target != capID {
		t.Fatalf("%v %v target %q", cr, err, rec.target)
	}
	if got := r.caps.Canceled(); len(got) != 1 || got[0] != capID+" by "+operator.String() {
		t.Fatalf("cancels %v", got)
	}
	_, err = r.fleet.CancelCapture(ctxAs(operator), &livedumpv1.CancelCaptureRequest{Id: "cap-none"})
	wantCode(t, err, codes.NotFound, "capture cap-none: capture not found")
}

func TestListCapturesCursor(t *testing.T) {
	r := newRig(t, false)
	r.caps.CapturesPerPage = 2
	for i := range 5 {
		r.caps.Add(&livedumpv1.Capture{Id: fmt.Sprintf("cap-%04d", i), Created: timestamppb.New(t0.Add(time.Duration(i) * time.Minute))})
	}
	var ids []string
	after := ""
	for range 4 {
		resp, err := r.fleet.ListCaptures(ctxAs(viewer), &livedumpv1.ListCapturesRequest{After: after})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range resp.GetCaptures() {
			ids = append(ids, c.GetId())
		}
		if after = resp.GetNext(); after == "" {
			break
		}
	}
	if fmt.Sprint(ids) != "[cap-0004 cap-0003 cap-0002 cap-0001 cap-0000]" {
		t.Fatalf("pages gave %v", ids)
	}
	_, err := r.fleet.ListCaptures(ctxAs(viewer), &livedumpv1.ListCapturesRequest{After: encodeCursor("ListCaptures", "noon", "cap-0001")})
	wantCode(t, err, codes.InvalidArgument, "after: not a page token of ListCaptures")
	r.caps.Err = errors.New("boom")
	_, err = r.fleet.ListCaptures(ctxAs(viewer), &livedumpv1.ListCapturesRequest{})
	wantCode(t, err, codes.Internal, "list captures failed")
}

// TestWatchCapture follows a capture: targets and stored events first,
// then live messages, an event seen in history not twice, until it ends.
func TestWatchCapture(t *testing.T) {
	r := newRig(t, false)
	r.caps.Add(&livedumpv1.Capture{Id: capID, State: livedumpv1.CaptureState_CAPTURE_STATE_ACTIVE,
		Targets: []*livedumpv1.CaptureTarget{{AgentId: agentA}, {AgentId: agentB}}})
	r.caps.AddEvents(capID, event(1, agentA, "WS-A", "f"), event(2, agentB, "WS-B", "g"))
	stream := &sendStream[livedumpv1.WatchCaptureResponse]{serverStream: serverStream{ctx: ctxAs(viewer)}}
	// Once history is out (4 messages), live messages arrive: a repeat of a
	// stored event, a new one, and the end.
	stream.onSend = func(n int) {
		if n == 4 {
			r.caps.Publish(capID, &livedumpv1.WatchCaptureResponse{Msg: &livedumpv1.WatchCaptureResponse_Event{Event: event(2, agentB, "WS-B", "g")}})
			r.caps.Publish(capID, &livedumpv1.WatchCaptureResponse{Msg: &livedumpv1.WatchCaptureResponse_Event{Event: event(3, agentA, "WS-A", "h")}})
			r.caps.Publish(capID, &livedumpv1.WatchCaptureResponse{Msg: &livedumpv1.WatchCaptureResponse_Ended{Ended: &livedumpv1.Capture{Id: capID}}})
		}
	}
	if err := r.fleet.WatchCapture(&livedumpv1.WatchCaptureRequest{Id: capID}, stream); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range stream.msgs() {
		switch {
		case m.GetTarget() != nil:
			got = append(got, "target "+m.GetTarget().GetAgentId()[:2])
		case m.GetEvent() != nil:
			got = append(got, "event "+m.GetEvent().GetId())
		case m.GetEnded() != nil:
			got = append(got, "ended")
		}
	}
	if fmt.Sprint(got) != "[target a1 target b2 event ev-0001 event ev-0002 event ev-0003 ended]" {
		t.Fatalf("sent %v", got)
	}
	if r.caps.Stops() != 1 || r.caps.Watchers(capID) != 0 {
		t.Fatal("the watch was not stopped")
	}
}

func TestWatchCaptureEnds(t *testing.T) {
	r := newRig(t, false)
	// An ended capture: its history, then one Ended message.
	r.caps.Add(&livedumpv1.Capture{Id: capID, State: livedumpv1.CaptureState_CAPTURE_STATE_DONE, Targets: []*livedumpv1.CaptureTarget{{AgentId: agentA}}})
	r.caps.AddEvents(capID, event(1, agentA, "WS-A", "f"))
	stream := &sendStream[livedumpv1.WatchCaptureResponse]{serverStream: serverStream{ctx: ctxAs(viewer)}}
	if err := r.fleet.WatchCapture(&livedumpv1.WatchCaptureRequest{Id: capID}, stream); err != nil {
		t.Fatal(err)
	}
	if m := stream.msgs(); len(m) != 3 || m[2].GetEnded().GetState() != livedumpv1.CaptureState_CAPTURE_STATE_DONE {
		t.Fatalf("sent %v", m)
	}

	// A watcher the manager drops is told to watch again.
	r.caps.Add(&livedumpv1.Capture{Id: "cap-0002", State: livedumpv1.CaptureState_CAPTURE_STATE_ACTIVE})
	stream = &sendStream[livedumpv1.WatchCaptureResponse]{serverStream: serverStream{ctx: ctxAs(viewer)}}
	r.caps.Drop("cap-0002")
	err := r.fleet.WatchCapture(&livedumpv1.WatchCaptureRequest{Id: "cap-0002"}, stream)
	wantCode(t, err, codes.Unavailable, "watch ended")

	// An unknown capture.
	err = r.fleet.WatchCapture(&livedumpv1.WatchCaptureRequest{Id: "cap-none"}, stream)
	wantCode(t, err, codes.NotFound, "capture cap-none: capture not found")

	// The caller going away ends the watch without an error.
	r.caps.Add(&livedumpv1.Capture{Id: "cap-0003", State: livedumpv1.CaptureState_CAPTURE_STATE_ACTIVE})
	ctx, cancel := context.WithCancel(ctxAs(viewer))
	stream = &sendStream[livedumpv1.WatchCaptureResponse]{serverStream: serverStream{ctx: ctx}}
	cancel()
	if err := r.fleet.WatchCapture(&livedumpv1.WatchCaptureRequest{Id: "cap-0003"}, stream); err != nil {
		t.Fatalf("cancelled watch: %v", err)
	}
}

func TestListEvents(t *testing.T) {
	r := newRig(t, false)
	storeCapture(t, r, capID)
	for i := range 5 {
		r.caps.AddEvents(capID, event(i, agentA, "WS-A", "f"))
	}
	for _, tc := range []struct {
		req   *livedumpv1.ListEventsRequest
		code  codes.Code
		field string
	}{
		{&livedumpv1.ListEventsRequest{CaptureId: capID, Limit: -1}, codes.InvalidArgument, "limit: "},
		{&livedumpv1.ListEventsRequest{CaptureId: capID, Limit: 10001}, codes.InvalidArgument, "limit: "},
		{&livedumpv1.ListEventsRequest{CaptureId: capID, After: string(make([]byte, 65))}, codes.InvalidArgument, "after: "},
		{&livedumpv1.ListEventsRequest{CaptureId: capID, After: "ev-9999"}, codes.InvalidArgument, `after: event "ev-9999" not found`},
		{&livedumpv1.ListEventsRequest{CaptureId: "cap-none"}, codes.NotFound, "capture cap-none: capture not found"},
	} {
		_, err := r.fleet.ListEvents(ctxAs(viewer), tc.req)
		wantCode(t, err, tc.code, tc.field)
	}
	resp, err := r.fleet.ListEvents(ctxAs(viewer), &livedumpv1.ListEventsRequest{CaptureId: capID, Limit: 3})
	if err != nil || len(resp.GetEvents()) != 3 || resp.GetNext() != "ev-0002" {
		t.Fatalf("%v %v", resp, err)
	}
	resp, err = r.fleet.ListEvents(ctxAs(viewer), &livedumpv1.ListEventsRequest{CaptureId: capID, Limit: 3, After: resp.GetNext()})
	if err != nil || len(resp.GetEvents()) != 2 || resp.GetNext() != "" {
		t.Fatalf("%v %v", resp, err)
	}
	if b := r.caps.Budgets(); b[len(b)-1] != eventPageBytes {
		t.Fatalf("budget %d", b[len(b)-1])
	}
}

// TestBucketEvents checks grouping by stack signature: counts, first and
// last seen, agents named by hostname, buckets largest first.
func TestBucketEvents(t *testing.T) {
	r := newRig(t, false)
	storeCapture(t, r, capID)
	r.caps.AddEvents(capID,
		event(1, agentA, "WS-A", "f"), event(2, agentB, "WS-B", "g"), event(3, agentB, "", "g"),
		event(4, agentA, "WS-A", "g"), event(5, agentC, "WS-C", "f"), event(6, agentC, "WS-C", "g"))
	for _, frames := range []int32{-1, 51} {
		_, err := r.fleet.BucketEvents(ctxAs(viewer), &livedumpv1.BucketEventsRequest{CaptureId: capID, Frames: frames})
		wantCode(t, err, codes.InvalidArgument, "frames: ")
	}
	_, err := r.fleet.BucketEvents(ctxAs(viewer), &livedumpv1.BucketEventsRequest{CaptureId: "cap-none"})
	wantCode(t, err, codes.NotFound, "capture cap-none: capture not found")

	resp, err := r.fleet.BucketEvents(ctxAs(viewer), &livedumpv1.BucketEventsRequest{CaptureId: capID, Frames: 5})
	if err != nil {
		t.Fatal(err)
	}
	bs := resp.GetBuckets()
	if len(bs) != 2 || bs[0].GetCount() != 4 || bs[1].GetCount() != 2 || resp.GetOmittedBuckets() != 0 {
		t.Fatalf("buckets %v", bs)
	}
	g := bs[0]
	if g.GetSignature() != capture.Signature(event(2, agentB, "WS-B", "g"), 5) {
		t.Fatalf("signature %q", g.GetSignature())
	}
	// The event without a hostname is named by its agent ID.
	if fmt.Sprint(g.GetAgents()) != "[WS-A WS-B WS-C "+agentB+"]" || g.GetAgentCount() != 4 {
		t.Fatalf("agents %v (%d)", g.GetAgents(), g.GetAgentCount())
	}
	if !g.GetFirstSeen().AsTime().Equal(t0.Add(2*time.Second)) || !g.GetLastSeen().AsTime().Equal(t0.Add(6*time.Second)) || g.GetExample().GetId() != "ev-0002" {
		t.Fatalf("bucket %v", g)
	}
}
