package api

import (
	"context"
	"errors"
	"sort"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/livedump/livedump/controller/capture"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

func captureErr(s *FleetServer, op string, err error) error {
	var fe *capture.FieldError
	if errors.As(err, &fe) {
		return invalid(fe.Field, "%s", fe.Reason)
	}
	var nothing *capture.CatchesNothingError
	if errors.As(err, &nothing) {
		// Well-formed, but pointless given the fleet as it is; force
		// overrides it.
		return status.Error(codes.FailedPrecondition, nothing.Message)
	}
	if errors.Is(err, store.ErrNotFound) {
		return status.Errorf(codes.NotFound, "%s: capture not found", op)
	}
	return toStatus(s.cfg.Logger, op, err)
}

func validCaptureID(id string) error {
	if len(id) < 3 || len(id) > 64 {
		return invalid("id", "%q is not a capture ID", id)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return invalid("id", "%q is not a capture ID", id)
		}
	}
	return nil
}

// CreateCapture implements FleetService.CreateCapture: a capture and its
// preview, or with dry_run the preview alone. A dry run is authorized and
// audited like a create (its audit entry says dry_run, and is all it
// stores).
func (s *FleetServer) CreateCapture(ctx context.Context, req *livedumpv1.CreateCaptureRequest) (*livedumpv1.CreateCaptureResponse, error) {
	id, _ := IdentityFromContext(ctx)
	c, preview, err := s.cfg.Captures.Create(ctx, capture.Request{
		Spec: req.GetSpec(), Actor: id.String(), Admin: id.Role.Allows(pki.RoleAdmin),
		DryRun: req.GetDryRun(), Force: req.GetForce(),
	})
	if err != nil {
		return nil, captureErr(s, "create capture", err)
	}
	if req.GetDryRun() {
		setAuditTarget(ctx, capture.DryRunID)
		return &livedumpv1.CreateCaptureResponse{Preview: preview}, nil
	}
	setAuditTarget(ctx, c.GetId())
	// A capture over thousands of machines: the first targets, the others
	// counted in omitted_targets and on GetCapture's pages.
	return &livedumpv1.CreateCaptureResponse{Capture: capture.Trim(c, s.pageBudget()), Preview: preview}, nil
}

// ListCaptures implements FleetService.ListCaptures. Captures are paged
// here, over the store's list of them; targets are read for a page only.
func (s *FleetServer) ListCaptures(ctx context.Context, req *livedumpv1.ListCapturesRequest) (*livedumpv1.ListCapturesResponse, error) {
	var afterCreated time.Time
	afterID := ""
	if req.GetAfter() != "" {
		k, err := decodeCursor(req.GetAfter(), "ListCaptures", 2)
		if err != nil {
			return nil, err
		}
		if afterCreated, err = parseCursorTime(k[0], "ListCaptures"); err != nil {
			return nil, err
		}
		afterID = k[1]
	}
	cs, more, err := s.cfg.Captures.ListPage(ctx, afterCreated, afterID, s.pageBudget())
	if err != nil {
		return nil, captureErr(s, "list captures", err)
	}
	resp := &livedumpv1.ListCapturesResponse{Captures: cs}
	if more && len(cs) > 0 {
		last := cs[len(cs)-1]
		resp.Next = encodeCursor("ListCaptures", cursorTime(last.GetCreated().AsTime()), last.GetId())
	}
	return resp, nil
}

// GetCapture implements FleetService.GetCapture: the capture with a page of
// its targets.
func (s *FleetServer) GetCapture(ctx context.Context, req *livedumpv1.GetCaptureRequest) (*livedumpv1.GetCaptureResponse, error) {
	if err := validCaptureID(req.GetId()); err != nil {
		return nil, err
	}
	after := ""
	if req.GetAfter() != "" {
		k, err := decodeCursor(req.GetAfter(), "GetCapture", 1)
		if err != nil {
			return nil, err
		}
		after = k[0]
	}
	c, next, err := s.cfg.Captures.GetPage(ctx, req.GetId(), after, s.pageBudget())
	if err != nil {
		return nil, captureErr(s, "capture "+req.GetId(), err)
	}
	resp := &livedumpv1.GetCaptureResponse{Capture: c}
	if next != "" {
		resp.Next = encodeCursor("GetCapture", next)
	}
	return resp, nil
}

// CancelCapture implements FleetService.CancelCapture.
func (s *FleetServer) CancelCapture(ctx context.Context, req *livedumpv1.CancelCaptureRequest) (*livedumpv1.CancelCaptureResponse, error) {
	if err := validCaptureID(req.GetId()); err != nil {
		return nil, err
	}
	setAuditTarget(ctx, req.GetId())
	id, _ := IdentityFromContext(ctx)
	c, err := s.cfg.Captures.Cancel(ctx, req.GetId(), id.String())
	if err != nil {
		return nil, captureErr(s, "capture "+req.GetId(), err)
	}
	return &livedumpv1.CancelCaptureResponse{Capture: capture.Trim(c, s.pageBudget())}, nil
}

// WatchCapture implements FleetService.WatchCapture: first the events stored
// so far, then live events and target changes until the capture ends.
func (s *FleetServer) WatchCapture(req *livedumpv1.WatchCaptureRequest, stream grpc.ServerStreamingServer[livedumpv1.WatchCaptureResponse]) error {
	ctx := stream.Context()
	if err := validCaptureID(req.GetId()); err != nil {
		return err
	}
	// Subscribe before reading history, so nothing falls in between; an
	// event in both is sent twice at most, and carries its ID.
	ch, stop := s.cfg.Events.Watch(req.GetId())
	defer stop()
	c, err := s.cfg.Captures.Get(ctx, req.GetId())
	if err != nil {
		return captureErr(s, "capture "+req.GetId(), err)
	}
	for _, t := range c.GetTargets() {
		if err := stream.Send(&livedumpv1.WatchCaptureResponse{Msg: &livedumpv1.WatchCaptureResponse_Target{Target: t}}); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	after := ""
	for {
		evs, err := s.cfg.Events.Events(ctx, req.GetId(), after, 1000)
		if err != nil {
			return captureErr(s, "events", err)
		}
		for _, e := range evs {
			seen[e.GetId()] = true
			if err := stream.Send(&livedumpv1.WatchCaptureResponse{Msg: &livedumpv1.WatchCaptureResponse_Event{Event: e}}); err != nil {
				return err
			}
		}
		if len(evs) < 1000 {
			break
		}
		after = evs[len(evs)-1].GetId()
	}
	if c.GetState() != livedumpv1.CaptureState_CAPTURE_STATE_ACTIVE {
		// One message: the targets went out one by one above.
		return stream.Send(&livedumpv1.WatchCaptureResponse{Msg: &livedumpv1.WatchCaptureResponse_Ended{Ended: capture.Trim(c, capture.MessageBudget)}})
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-ch:
			if !ok {
				return status.Error(codes.Unavailable, "watch ended: the controller dropped this watcher (too slow) or the capture ended; run watch again")
			}
			if e := m.GetEvent(); e != nil && seen[e.GetId()] {
				continue
			}
			if err := stream.Send(m); err != nil {
				return err
			}
			if m.GetEnded() != nil {
				return nil
			}
		}
	}
}

// ListEvents implements FleetService.ListEvents.
func (s *FleetServer) ListEvents(ctx context.Context, req *livedumpv1.ListEventsRequest) (*livedumpv1.ListEventsResponse, error) {
	if err := validCaptureID(req.GetCaptureId()); err != nil {
		return nil, err
	}
	limit := int(req.GetLimit())
	if limit < 0 || limit > 10000 {
		return nil, invalid("limit", "must be between 0 and 10000, got %d", limit)
	}
	if _, err := s.cfg.Store.GetCapture(ctx, req.GetCaptureId()); err != nil {
		return nil, captureErr(s, "capture "+req.GetCaptureId(), err)
	}
	if req.GetAfter() != "" && len(req.GetAfter()) > 64 {
		return nil, invalid("after", "%q is not an event ID", req.GetAfter()[:64])
	}
	evs, next, err := s.cfg.Events.EventsPage(ctx, req.GetCaptureId(), req.GetAfter(), limit, eventPageBytes)
	if errors.Is(err, store.ErrNotFound) && req.GetAfter() != "" {
		return nil, invalid("after", "event %q not found", req.GetAfter())
	}
	if err != nil {
		return nil, captureErr(s, "events", err)
	}
	return &livedumpv1.ListEventsResponse{Events: evs, Next: next}, nil
}

// Response size budgets, well under gRPC's default 4 MiB message limit: a
// page stops before it would pass its budget, and says where to go on.
const (
	eventPageBytes  = 1 << 20
	bucketsBytes    = 3 << 20
	maxBucketAgents = 100
)

// BucketEvents implements FleetService.BucketEvents.
func (s *FleetServer) BucketEvents(ctx context.Context, req *livedumpv1.BucketEventsRequest) (*livedumpv1.BucketEventsResponse, error) {
	if err := validCaptureID(req.GetCaptureId()); err != nil {
		return nil, err
	}
	frames := int(req.GetFrames())
	if frames < 0 || frames > 50 {
		return nil, invalid("frames", "must be between 1 and 50, got %d", frames)
	}
	if _, err := s.cfg.Store.GetCapture(ctx, req.GetCaptureId()); err != nil {
		return nil, captureErr(s, "capture "+req.GetCaptureId(), err)
	}
	buckets := map[string]*livedumpv1.Bucket{}
	agents := map[string]map[string]bool{}
	after := ""
	for {
		evs, err := s.cfg.Events.Events(ctx, req.GetCaptureId(), after, 10000)
		if err != nil {
			return nil, captureErr(s, "events", err)
		}
		for _, e := range evs {
			sig := capture.Signature(e, frames)
			b := buckets[sig]
			if b == nil {
				b = &livedumpv1.Bucket{Signature: sig, FirstSeen: e.GetTime(), Example: e}
				buckets[sig] = b
				agents[sig] = map[string]bool{}
			}
			b.Count++
			b.LastSeen = e.GetTime()
			name := e.GetHostname()
			if name == "" {
				name = e.GetAgentId()
			}
			agents[sig][name] = true
		}
		if len(evs) < 10000 {
			break
		}
		after = evs[len(evs)-1].GetId()
	}
	all := make([]*livedumpv1.Bucket, 0, len(buckets))
	for sig, b := range buckets {
		for a := range agents[sig] {
			b.Agents = append(b.Agents, a)
		}
		sort.Strings(b.Agents)
		b.AgentCount = int64(len(b.Agents))
		if len(b.Agents) > maxBucketAgents {
			b.Agents = b.Agents[:maxBucketAgents]
		}
		all = append(all, b)
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].GetCount() != all[j].GetCount() {
			return all[i].GetCount() > all[j].GetCount()
		}
		return all[i].GetSignature() < all[j].GetSignature()
	})
	resp := &livedumpv1.BucketEventsResponse{}
	size := 0
	for i, b := range all {
		n := proto.Size(b) + 8
		if size+n > bucketsBytes {
			resp.OmittedBuckets = int64(len(all) - i)
			break
		}
		size += n
		resp.Buckets = append(resp.Buckets, b)
	}
	return resp, nil
}
