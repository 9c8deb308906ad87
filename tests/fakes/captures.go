package fakes

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/controller/capture"
	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/store"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Captures stands in for capture.Manager: captures and their events in
// memory, what agents reported recorded. The zero value is ready to use.
type Captures struct {
	// Err, when set, is returned by every call that can fail.
	Err error
	// IngestErr is returned by Ingest (which ends the agent's stream).
	IngestErr error
	// Now stamps created captures (default: the wall clock).
	Now func() time.Time
	// TargetsPerPage bounds the targets of a GetPage (0: all of them).
	TargetsPerPage int
	// CapturesPerPage bounds a ListPage (0: all of them).
	CapturesPerPage int

	mu       sync.Mutex
	captures map[string]*livedumpv1.Capture
	events   map[string][]*livedumpv1.TriggerEvent
	watchers map[string][]chan *livedumpv1.WatchCaptureResponse
	dropped  map[string]bool

	created  Log[capture.Request]
	canceled Log[string]
	budgets  Log[int]
	kicks    int
	acks     Log[AgentMsg[*livedumpv1.Ack]]
	ingested Log[AgentMsg[*livedumpv1.TriggerEvent]]
	statuses Log[AgentMsg[*livedumpv1.CaptureStatus]]
	stops    int
}

// AgentMsg is a message an agent sent, as a fake recorded it.
type AgentMsg[M any] struct {
	AgentID string
	Msg     M
}

func (f *Captures) init() {
	if f.captures == nil {
		f.captures = map[string]*livedumpv1.Capture{}
		f.events = map[string][]*livedumpv1.TriggerEvent{}
		f.watchers = map[string][]chan *livedumpv1.WatchCaptureResponse{}
		f.dropped = map[string]bool{}
	}
}

// Add stores c as it is.
func (f *Captures) Add(c *livedumpv1.Capture) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	f.captures[c.GetId()] = proto.Clone(c).(*livedumpv1.Capture)
}

// AddEvents appends events to the capture id, in ID order as given.
func (f *Captures) AddEvents(id string, evs ...*livedumpv1.TriggerEvent) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	f.events[id] = append(f.events[id], evs...)
}

// Publish sends m to every watcher of the capture id.
func (f *Captures) Publish(id string, m *livedumpv1.WatchCaptureResponse) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ch := range f.watchers[id] {
		ch <- m
	}
}

// Drop closes the channels of every watcher of the capture id, as the
// manager does to a watcher too slow to keep up; a watcher that subscribes
// later is dropped at once.
func (f *Captures) Drop(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	f.dropped[id] = true
	for _, ch := range f.watchers[id] {
		close(ch)
	}
	f.watchers[id] = nil
}

// Watchers is how many watchers the capture id has.
func (f *Captures) Watchers(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.watchers[id])
}

// Created returns the requests Create received.
func (f *Captures) Created() []capture.Request { return f.created.All() }

// Canceled returns "id by actor" for each Cancel received.
func (f *Captures) Canceled() []string { return f.canceled.All() }

// Budgets returns the page budgets the paged calls received.
func (f *Captures) Budgets() []int { return f.budgets.All() }

// Kicks is how many times Kick was called.
func (f *Captures) Kicks() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.kicks
}

// Acks returns the acks received.
func (f *Captures) Acks() []AgentMsg[*livedumpv1.Ack] { return f.acks.All() }

// Ingested returns the events received.
func (f *Captures) Ingested() []AgentMsg[*livedumpv1.TriggerEvent] { return f.ingested.All() }

// Statuses returns the capture statuses received.
func (f *Captures) Statuses() []AgentMsg[*livedumpv1.CaptureStatus] { return f.statuses.All() }

// Stops is how many watches were stopped.
func (f *Captures) Stops() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stops
}

// Kick implements api.CaptureReports.
func (f *Captures) Kick() {
	f.mu.Lock()
	f.kicks++
	f.mu.Unlock()
}

// Acked implements api.CaptureReports.
func (f *Captures) Acked(_ context.Context, agentID string, ack *livedumpv1.Ack) {
	f.mu.Lock()
	f.acks.add(AgentMsg[*livedumpv1.Ack]{agentID, ack})
	f.mu.Unlock()
}

// Ingest implements api.CaptureReports.
func (f *Captures) Ingest(_ context.Context, _ *fleet.Session, agentID string, ev *livedumpv1.TriggerEvent) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ingested.add(AgentMsg[*livedumpv1.TriggerEvent]{agentID, ev})
	return f.IngestErr
}

// IngestBatch implements api.CaptureReports: each event as Ingest.
func (f *Captures) IngestBatch(ctx context.Context, s *fleet.Session, agentID string, evs []*livedumpv1.TriggerEvent) error {
	for _, ev := range evs {
		if err := f.Ingest(ctx, s, agentID, ev); err != nil {
			return err
		}
	}
	return nil
}

// Status implements api.CaptureReports.
func (f *Captures) Status(_ context.Context, agentID string, st *livedumpv1.CaptureStatus) {
	f.mu.Lock()
	f.statuses.add(AgentMsg[*livedumpv1.CaptureStatus]{agentID, st})
	f.mu.Unlock()
}

// Create implements api.Captures: the capture is stored active, with an
// ID numbered in order of creation, and a preview of its selector only; a
// dry run stores nothing and returns that preview.
func (f *Captures) Create(_ context.Context, r capture.Request) (*livedumpv1.Capture, *livedumpv1.CapturePreview, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	f.created.add(r)
	if f.Err != nil {
		return nil, nil, f.Err
	}
	preview := &livedumpv1.CapturePreview{Selector: r.Spec.GetSelector()}
	if r.DryRun {
		return nil, preview, nil
	}
	now := time.Now()
	if f.Now != nil {
		now = f.Now()
	}
	c := &livedumpv1.Capture{
		Id: fmt.Sprintf("cap-%04d", f.created.len()), Spec: r.Spec, State: livedumpv1.CaptureState_CAPTURE_STATE_ACTIVE,
		Created: timestamppb.New(now), CreatedBy: r.Actor,
	}
	f.captures[c.Id] = c
	return proto.Clone(c).(*livedumpv1.Capture), preview, nil
}

// Cancel implements api.Captures.
func (f *Captures) Cancel(_ context.Context, id, actor string) (*livedumpv1.Capture, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.canceled.add(id + " by " + actor)
	if f.Err != nil {
		return nil, f.Err
	}
	c, ok := f.captures[id]
	if !ok {
		return nil, store.ErrNotFound
	}
	c.State = livedumpv1.CaptureState_CAPTURE_STATE_CANCELLED
	return proto.Clone(c).(*livedumpv1.Capture), nil
}

// Get implements api.Captures.
func (f *Captures) Get(_ context.Context, id string) (*livedumpv1.Capture, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return nil, f.Err
	}
	c, ok := f.captures[id]
	if !ok {
		return nil, store.ErrNotFound
	}
	return proto.Clone(c).(*livedumpv1.Capture), nil
}

// GetPage implements api.Captures: TargetsPerPage targets after the agent
// ID after; next is the last one's agent ID if more follow.
func (f *Captures) GetPage(_ context.Context, id, after string, budget int) (*livedumpv1.Capture, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.budgets.add(budget)
	if f.Err != nil {
		return nil, "", f.Err
	}
	c, ok := f.captures[id]
	if !ok {
		return nil, "", store.ErrNotFound
	}
	c = proto.Clone(c).(*livedumpv1.Capture)
	ts := c.Targets
	if after != "" {
		i := slices.IndexFunc(ts, func(t *livedumpv1.CaptureTarget) bool { return t.GetAgentId() == after })
		ts = ts[i+1:]
	}
	next := ""
	if f.TargetsPerPage > 0 && len(ts) > f.TargetsPerPage {
		ts = ts[:f.TargetsPerPage]
		next = ts[len(ts)-1].GetAgentId()
	}
	c.Targets = ts
	return c, next, nil
}

// ListPage implements api.Captures: newest first, then by ID descending,
// CapturesPerPage at a time.
func (f *Captures) ListPage(_ context.Context, afterCreated time.Time, afterID string, budget int) ([]*livedumpv1.Capture, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.budgets.add(budget)
	if f.Err != nil {
		return nil, false, f.Err
	}
	all := make([]*livedumpv1.Capture, 0, len(f.captures))
	for _, c := range f.captures {
		all = append(all, proto.Clone(c).(*livedumpv1.Capture))
	}
	before := func(a, b *livedumpv1.Capture) int {
		at, bt := a.GetCreated().AsTime(), b.GetCreated().AsTime()
		if !at.Equal(bt) {
			return bt.Compare(at)
		}
		return -strings.Compare(a.GetId(), b.GetId())
	}
	slices.SortFunc(all, before)
	if afterID != "" {
		pos := &livedumpv1.Capture{Id: afterID, Created: timestamppb.New(afterCreated)}
		i := 0
		for i < len(all) && before(all[i], pos) <= 0 {
			i++
		}
		all = all[i:]
	}
	if f.CapturesPerPage > 0 && len(all) > f.CapturesPerPage {
		return all[:f.CapturesPerPage], true, nil
	}
	return all, false, nil
}

// Watch implements api.CaptureEvents.
func (f *Captures) Watch(id string) (<-chan *livedumpv1.WatchCaptureResponse, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	ch := make(chan *livedumpv1.WatchCaptureResponse, 16)
	if f.dropped[id] {
		close(ch)
	} else {
		f.watchers[id] = append(f.watchers[id], ch)
	}
	return ch, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.stops++
		f.watchers[id] = slices.DeleteFunc(f.watchers[id], func(c chan *livedumpv1.WatchCaptureResponse) bool { return c == ch })
	}
}

// eventsAfter returns the capture's events after the event ID after, and
// whether after was found.
func (f *Captures) eventsAfter(id, after string) ([]*livedumpv1.TriggerEvent, bool) {
	evs := f.events[id]
	if after == "" {
		return evs, true
	}
	i := slices.IndexFunc(evs, func(e *livedumpv1.TriggerEvent) bool { return e.GetId() == after })
	if i < 0 {
		return nil, false
	}
	return evs[i+1:], true
}

// Events implements api.CaptureEvents.
func (f *Captures) Events(_ context.Context, captureID, after string, limit int) ([]*livedumpv1.TriggerEvent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Err != nil {
		return nil, f.Err
	}
	evs, _ := f.eventsAfter(captureID, after)
	if limit > 0 && len(evs) > limit {
		evs = evs[:limit]
	}
	return slices.Clone(evs), nil
}

// EventsPage implements api.CaptureEvents: limit events (0: 100) after the
// event after, ErrNotFound if there is no such event; next is the last
// one's ID if more follow. The budget is recorded, not applied.
func (f *Captures) EventsPage(_ context.Context, captureID, after string, limit, budget int) ([]*livedumpv1.TriggerEvent, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.budgets.add(budget)
	if f.Err != nil {
		return nil, "", f.Err
	}
	evs, ok := f.eventsAfter(captureID, after)
	if !ok {
		return nil, "", store.ErrNotFound
	}
	if limit == 0 {
		limit = 100
	}
	if len(evs) > limit {
		evs = evs[:limit]
		return slices.Clone(evs), evs[len(evs)-1].GetId(), nil
	}
	return slices.Clone(evs), "", nil
}
