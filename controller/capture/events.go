package capture

import (
	"context"
	"encoding/json"
	"maps"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/controller/store"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// eventPages reads a capture's stored events a page at a time, as the API
// shows them.
type eventPages struct {
	store eventStore
}

// eventStore is what eventPages reads.
type eventStore interface {
	store.AgentReader
	EventSeq(ctx context.Context, id string) (int64, error)
	ListEvents(ctx context.Context, captureID string, afterSeq int64, limit int) ([]store.Event, error)
}

// Events returns a capture's events after the event with ID after.
func (p *eventPages) Events(ctx context.Context, captureID, after string, limit int) ([]*livedumpv1.TriggerEvent, error) {
	evs, _, err := p.EventsPage(ctx, captureID, after, limit, 0)
	return evs, err
}

// eventChunk is how many stored events a page reads at a time.
const eventChunk = 256

// EventsPage returns up to limit of a capture's events after the event with
// ID after, and at most budget encoded bytes of them (0: no budget; one
// event is always returned, and none exceeds MaxEventBytes by much). next is
// the ID to read on from, empty when no event follows.
func (p *eventPages) EventsPage(ctx context.Context, captureID, after string, limit, budget int) (evs []*livedumpv1.TriggerEvent, next string, err error) {
	if limit <= 0 {
		limit = 1000
	}
	var seq int64
	if after != "" {
		if seq, err = p.store.EventSeq(ctx, after); err != nil {
			return nil, "", err
		}
	}
	hosts := map[string]string{}
	size := 0
	for {
		// One row more than the limit, to know whether another follows.
		want := min(limit-len(evs)+1, eventChunk)
		rows, err := p.store.ListEvents(ctx, captureID, seq, want)
		if err != nil {
			return nil, "", err
		}
		// Hostnames of this chunk's agents not named yet: a page never
		// reads the whole fleet with its labels.
		unnamed := map[string]bool{}
		for _, r := range rows {
			if _, ok := hosts[r.AgentID]; !ok {
				unnamed[r.AgentID] = true
				hosts[r.AgentID] = ""
			}
		}
		if len(unnamed) > 0 {
			if named, err := store.Hostnames(ctx, p.store, unnamed); err == nil {
				maps.Copy(hosts, named)
			}
		}
		for _, r := range rows {
			if len(evs) == limit {
				return evs, evs[len(evs)-1].GetId(), nil
			}
			ev := eventProto(r, hosts[r.AgentID])
			n := proto.Size(ev) + 8 // with the field's tag and length
			if budget > 0 && len(evs) > 0 && size+n > budget {
				return evs, evs[len(evs)-1].GetId(), nil
			}
			size += n
			evs = append(evs, ev)
			seq = r.Seq
		}
		if len(rows) < want {
			return evs, "", nil
		}
	}
}

// eventProto is a stored event as the API shows it. Strings and stacks are
// cut to the ingest limits, for events stored before those limits existed.
func eventProto(r store.Event, hostname string) *livedumpv1.TriggerEvent {
	return &livedumpv1.TriggerEvent{
		Id: r.ID, CaptureId: r.CaptureID, AgentId: r.AgentID, Hostname: hostname, Time: timestampOf(r.Time),
		Pid: int32(r.PID), Tid: int32(r.TID), Process: truncate(r.Process, MaxEventString), Probe: truncate(r.Probe, MaxEventString), Status: r.Status,
		UserFrames: framesProto(r.User), KernelFrames: framesProto(r.Kernel), Signature: truncate(r.Signature, 4*MaxEventString),
	}
}

type frameJSON struct {
	Module   string `json:"module,omitempty"`
	Function string `json:"function,omitempty"`
	Offset   uint64 `json:"offset,omitempty"`
	Address  uint64 `json:"address,omitempty"`
}

func framesJSON(fs []*livedumpv1.Frame) string {
	out := make([]frameJSON, 0, len(fs))
	for _, f := range fs {
		out = append(out, frameJSON{f.GetModule(), f.GetFunction(), f.GetOffset(), f.GetAddress()})
	}
	b, _ := json.Marshal(out)
	return string(b)
}

func framesProto(s string) []*livedumpv1.Frame {
	var fs []frameJSON
	_ = json.Unmarshal([]byte(s), &fs)
	if len(fs) > MaxEventFrames {
		fs = fs[:MaxEventFrames]
	}
	out := make([]*livedumpv1.Frame, 0, len(fs))
	for _, f := range fs {
		out = append(out, &livedumpv1.Frame{Module: truncate(f.Module, MaxEventString), Function: truncate(f.Function, MaxEventString), Offset: f.Offset, Address: f.Address})
	}
	return out
}

func timestampOf(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }
