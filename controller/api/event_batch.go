package api

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/livedump/livedump/controller/fleet"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// MaxEventBatch is how many trigger events one EventBatch may carry (the
// Welcome tells agents). With the per-event limit of 64 KiB a full batch of
// the largest events still fits gRPC's 4 MiB message limit.
const MaxEventBatch = 64

// ingestBatch takes the events of an EventBatch one by one, exactly as if
// each had come alone: the agent's rate counts events, and each is
// admitted, stored, acked or refused on its own. A batch over the bound
// ends the stream and none of it is queued: only a client that ignored the
// Welcome sends one.
func (s *AgentServer) ingestBatch(ctx context.Context, sess *fleet.Session, agentID string, b *livedumpv1.EventBatch) error {
	evs := b.GetEvents()
	if len(evs) > MaxEventBatch {
		s.cfg.Logger.Warn("event batch over the bound refused", "agent_id", agentID, "events", len(evs), "max", MaxEventBatch)
		return status.Errorf(codes.InvalidArgument, "event_batch: %d events, more than %d", len(evs), MaxEventBatch)
	}
	return s.cfg.Captures.IngestBatch(ctx, sess, agentID, evs)
}
