package capture

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/jonboulle/clockwork"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/enumname"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// lifecycle creates, reads, cancels and ends captures. Create is in
// capture.go, the pages in paging.go.
type lifecycle struct {
	store     lifecycleStore
	router    disarmer
	online    presence
	clock     clockwork.Clock
	log       *slog.Logger
	kick      wakeup
	admission forgetter
	watchers  endPublisher
	handOff   func(captureID string, targets []store.CaptureTarget) // to the scheduler (rollout.handOff); nil: none
}

// captureReader reads one capture with its targets and their hostnames.
type captureReader interface {
	store.AgentReader
	GetCapture(ctx context.Context, id string) (store.Capture, error)
	ListTargets(ctx context.Context, captureID string) ([]store.CaptureTarget, error)
}

// lifecycleStore is what the lifecycle reads and writes.
type lifecycleStore interface {
	captureReader
	ListAgentSelectors(ctx context.Context) ([]store.Agent, error)
	ListCaptures(ctx context.Context, state string) ([]store.Capture, error)
	CreateCapture(ctx context.Context, c store.Capture, targets []store.CaptureTarget) error
	FinishCapture(ctx context.Context, id, state, detail string) (bool, error)
	SetTargetStates(ctx context.Context, updates []store.CaptureTarget) (int, error)
}

// disarmer reaches agents wherever their stream is, and tells the other
// replicas a capture changed.
type disarmer interface {
	Send(ctx context.Context, agentID string, d *livedumpv1.Directive) error
	CaptureChanged(ctx context.Context, captureID string)
}

// presence says whether an agent's stream is attached to this replica or
// to another live one (the cluster; the fleet registry for a lone
// controller). nil: no agent is counted offline.
type presence interface {
	Online(ctx context.Context, agentID string) bool
}

// forgetter forgets what it knew of a capture that ended.
type forgetter interface{ ended(captureID string) }

// endPublisher gives a capture's watchers its final state.
type endPublisher interface {
	publishEnded(ctx context.Context, captureID string)
}

// Get returns a capture with its targets.
func (l *lifecycle) Get(ctx context.Context, id string) (*livedumpv1.Capture, error) {
	return loadCapture(ctx, l.store, l.online, id)
}

// loadCapture reads a capture with its targets, their hostnames and the
// count of targets offline.
func loadCapture(ctx context.Context, st captureReader, on presence, id string) (*livedumpv1.Capture, error) {
	c, err := st.GetCapture(ctx, id)
	if err != nil {
		return nil, err
	}
	targets, err := st.ListTargets(ctx, id)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, t := range targets {
		want[t.AgentID] = true
	}
	hosts, err := store.Hostnames(ctx, st, want)
	if err != nil {
		hosts = nil // the capture without hostnames rather than none
	}
	p, err := toProto(c, targets, hosts)
	if err != nil {
		return nil, err
	}
	p.OfflineTargets = countOffline(ctx, on, targets)
	return p, nil
}

// List returns every capture, newest first, without targets' hostnames.
func (l *lifecycle) List(ctx context.Context) ([]*livedumpv1.Capture, error) {
	cs, err := l.store.ListCaptures(ctx, "")
	if err != nil {
		return nil, err
	}
	var out []*livedumpv1.Capture
	for _, c := range cs {
		targets, err := l.store.ListTargets(ctx, c.ID)
		if err != nil {
			return nil, err
		}
		p, err := toProto(c, targets, nil)
		if err != nil {
			return nil, err
		}
		p.OfflineTargets = countOffline(ctx, l.online, targets)
		out = append(out, p)
	}
	return out, nil
}

// Cancel ends a capture and disarms every target.
func (l *lifecycle) Cancel(ctx context.Context, id, actor string) (*livedumpv1.Capture, error) {
	c, err := l.store.GetCapture(ctx, id)
	if err != nil {
		return nil, err
	}
	if c.State == StateActive {
		if err := l.end(ctx, c, StateCancelled, "cancelled by "+actor, "cancelled"); err != nil {
			return nil, err
		}
	}
	return l.Get(ctx, id)
}

// end stores the capture's final state, disarms live targets and closes
// watchers. Only the replica whose FinishCapture ended the capture does the
// rest, so targets are disarmed once.
func (l *lifecycle) end(ctx context.Context, c store.Capture, state, detail, reason string) error {
	changed, err := l.store.FinishCapture(ctx, c.ID, state, detail)
	if err != nil {
		return err
	}
	l.admission.ended(c.ID)
	if !changed {
		l.watchers.publishEnded(ctx, c.ID)
		return nil
	}
	targets, err := l.store.ListTargets(ctx, c.ID)
	if err != nil {
		return err
	}
	now := l.clock.Now().UTC()
	tstate := map[string]string{StateCancelled: TargetCancelled, StateExpired: TargetExpired, StateDone: TargetCancelled, StateFailed: TargetCancelled}[state]
	var ups []store.CaptureTarget
	for _, t := range targets {
		if targetTerminal(t.State) {
			continue
		}
		if t.State != TargetPending {
			d := &livedumpv1.Directive{Id: "disarm-" + c.ID, Created: timestamppb.New(now),
				Kind: &livedumpv1.Directive_Disarm{Disarm: &livedumpv1.DisarmCapture{CaptureId: c.ID, Reason: reason}}}
			if err := l.router.Send(ctx, t.AgentID, d); err != nil {
				l.log.Debug("disarm not sent", "capture_id", c.ID, "agent_id", t.AgentID, "err", err)
			}
		}
		ups = append(ups, store.CaptureTarget{CaptureID: c.ID, AgentID: t.AgentID, State: tstate, Detail: detail, Updated: now})
	}
	if _, err := l.store.SetTargetStates(ctx, ups); err != nil {
		return err
	}
	l.log.Info("capture ended", "capture_id", c.ID, "state", state, "detail", detail)
	l.router.CaptureChanged(ctx, c.ID)
	l.watchers.publishEnded(ctx, c.ID)
	return nil
}

func toProto(c store.Capture, targets []store.CaptureTarget, hosts map[string]string) (*livedumpv1.Capture, error) {
	spec := &livedumpv1.CaptureSpec{}
	if err := protojson.Unmarshal([]byte(c.Spec), spec); err != nil {
		return nil, fmt.Errorf("capture %s spec: %w", c.ID, err)
	}
	var statuses []*livedumpv1.ResolvedStatus
	if err := json.Unmarshal([]byte(c.Statuses), &statuses); err != nil {
		return nil, fmt.Errorf("capture %s statuses: %w", c.ID, err)
	}
	p := &livedumpv1.Capture{
		Id: c.ID, Spec: spec, State: captureStateValue(c.State), Created: timestamppb.New(c.Created), Expires: timestamppb.New(c.Expires),
		CreatedBy: c.CreatedBy, RenderedScript: c.Rendered, Statuses: statuses, Warnings: c.Warnings, Detail: c.Detail,
	}
	for _, t := range targets {
		p.Targets = append(p.Targets, targetProto(t, hosts[t.AgentID]))
	}
	tally(p, targets)
	return p, nil
}

// tally counts every target of a capture into p: its events and
// target_counts, whether or not the targets are listed in p.
func tally(p *livedumpv1.Capture, targets []store.CaptureTarget) {
	p.Events = 0
	p.TargetCounts = nil
	for _, t := range targets {
		p.Events += t.Events
		if p.TargetCounts == nil {
			p.TargetCounts = map[string]int64{}
		}
		p.TargetCounts[t.State]++
	}
}

// countOffline counts the targets not armed yet (pending or delivered)
// whose agent no replica holds a stream of: they wait for it to come back.
// Armed targets are not counted: their probe runs on the machine, connected
// or not, and its events are spooled there.
func countOffline(ctx context.Context, on presence, targets []store.CaptureTarget) int64 {
	if on == nil {
		return 0
	}
	var n int64
	for _, t := range targets {
		if (t.State == TargetPending || t.State == TargetDelivered) && !on.Online(ctx, t.AgentID) {
			n++
		}
	}
	return n
}

func targetProto(t store.CaptureTarget, hostname string) *livedumpv1.CaptureTarget {
	return &livedumpv1.CaptureTarget{
		AgentId: t.AgentID, Hostname: hostname, State: TargetStateValue(t.State), Detail: t.Detail, Events: t.Events, Updated: timestamppb.New(t.Updated),
	}
}

// Stored capture and target states are the short names of the wire enums
// (internal/enumname, words joined by "_"): "active", "cancelled".

// captureStateValue maps a stored capture state to the wire enum:
// UNSPECIFIED for a name it does not know.
func captureStateValue(s string) livedumpv1.CaptureState {
	v, _ := enumname.Parse[livedumpv1.CaptureState](s, "_")
	return v
}

// TargetStateValue maps a stored target state to the wire enum:
// UNSPECIFIED for a name it does not know.
func TargetStateValue(s string) livedumpv1.TargetState {
	v, _ := enumname.Parse[livedumpv1.TargetState](s, "_")
	return v
}

// targetStateName is the stored name of a wire target state; "" for
// UNSPECIFIED and numbers the enum does not name.
func targetStateName(v livedumpv1.TargetState) string {
	if !enumname.Valid(v) {
		return ""
	}
	return enumname.Name(v, "_")
}
