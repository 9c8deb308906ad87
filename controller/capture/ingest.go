package capture

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/store"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// ingester takes trigger events off the agents' streams: it queues them,
// refuses what admission or the agent's rate does not allow, stores the
// rest in batches, acks them, and hands them to live watchers. Target
// states reported by agents share its queue (see rollout.Status), so they
// are applied after the events sent before them.
type ingester struct {
	ingesterConfig
	metrics  ingestMetrics
	batching chan struct{} // held by the one IngestBatch queueing its events
}

// ingestStore is what the ingester reads and writes.
type ingestStore interface {
	admissionStore
	InsertEvents(ctx context.Context, events []store.Event) (int, error)
	GetAgent(ctx context.Context, id string) (store.Agent, error)
}

// refuser records a refused event.
type refuser interface {
	refuse(agentID, captureID string, r *refusal)
}

// statusApplier records the target states of one batch.
type statusApplier interface {
	applyStatuses(ctx context.Context, items []ingest)
}

// eventPublisher gives stored events to live watchers.
type eventPublisher interface {
	watched(captureID string) bool
	publishEvent(ev *livedumpv1.TriggerEvent)
}

// eventsNotifier tells the other replicas a capture has new events.
type eventsNotifier interface {
	EventsStored(ctx context.Context, captureID string)
}

type ingesterConfig struct {
	store      ingestStore
	clock      clockwork.Clock
	log        *slog.Logger
	queue      chan ingest
	batchSize  int
	batchDelay time.Duration
	eventRate  float64
	eventBurst int
	kick       wakeup
	admission  *admission
	limits     *limiters
	refusals   refuser
	statuses   statusApplier
	watchers   eventPublisher
	peers      eventsNotifier
	reg        prometheus.Registerer
}

func newIngester(c ingesterConfig) *ingester {
	return &ingester{
		ingesterConfig: c,
		metrics:        newIngestMetrics(c.reg),
		batching:       make(chan struct{}, 1),
	}
}

// Ingest queues an event from an agent's stream. It blocks when the queue is
// full, which slows that agent's stream down instead of buffering without
// bound. An event over the agent's rate or over the size limits is refused
// here, so only its IDs are queued, for the acknowledgement.
func (g *ingester) Ingest(ctx context.Context, s *fleet.Session, agentID string, ev *livedumpv1.TriggerEvent) error {
	select {
	case g.queue <- g.admit(s, agentID, ev):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// IngestBatch queues the events of one message, each as Ingest would. They
// go into the queue one after another, not interleaved with other batches
// (the queue is taken for the whole batch), so they are stored in one or
// two store batches and acked in one or two acks, not one each.
func (g *ingester) IngestBatch(ctx context.Context, s *fleet.Session, agentID string, evs []*livedumpv1.TriggerEvent) error {
	select {
	case g.batching <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-g.batching }()
	for _, ev := range evs {
		select {
		case g.queue <- g.admit(s, agentID, ev):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// admit is the queue entry of an event: refused at once if over the
// agent's rate or the size limits.
func (g *ingester) admit(s *fleet.Session, agentID string, ev *livedumpv1.TriggerEvent) ingest {
	it := ingest{agentID: agentID, ev: ev, sess: s}
	if !g.limits.allow(agentID, g.clock.Now()) {
		it.refused = &refusal{RefusedRateLimited, fmt.Sprintf("agent %s sent more than %g events a second (burst %d)", agentID, g.eventRate, g.eventBurst)}
	} else {
		it.refused = checkEvent(agentID, ev)
	}
	if it.refused != nil {
		it.ev = &livedumpv1.TriggerEvent{Id: ev.GetId(), CaptureId: truncate(ev.GetCaptureId(), 64)}
	}
	return it
}

func (g *ingester) loop(ctx context.Context) {
	for {
		var batch []ingest
		select {
		case <-ctx.Done():
			return
		case it := <-g.queue:
			batch = append(batch, it)
		}
		deadline := time.NewTimer(g.batchDelay)
	fill:
		for len(batch) < g.batchSize {
			select {
			case it := <-g.queue:
				batch = append(batch, it)
			case <-deadline.C:
				break fill
			}
		}
		deadline.Stop()
		g.flush(context.WithoutCancel(ctx), batch)
	}
}

// ackableID bounds the event IDs echoed in an acknowledgement: a longer one
// cannot be an ID our agents make, so there is nothing to drop from a spool.
const ackableID = 128

// flush stores a batch in one transaction, then acks it to the agents: an
// ack means the event is durable on the controller, or refused for good,
// and the agent may drop it from its spool.
func (g *ingester) flush(ctx context.Context, batch []ingest) {
	var rows []store.Event
	acks := map[*fleet.Session]*livedumpv1.EventAck{}
	ack := func(it ingest, r *refusal) {
		if it.sess == nil || len(it.ev.GetId()) > ackableID {
			return
		}
		a := acks[it.sess]
		if a == nil {
			a = &livedumpv1.EventAck{}
			acks[it.sess] = a
		}
		a.EventIds = append(a.EventIds, it.ev.GetId())
		if r != nil {
			a.Refused = append(a.Refused, refusalAck(it.ev.GetId(), r))
		}
	}
	var accepted, statuses []ingest
	loaded := map[string]bool{}
	for _, it := range batch {
		if it.status != nil {
			statuses = append(statuses, it)
			continue
		}
		captureID := it.ev.GetCaptureId()
		r := it.refused
		if r == nil {
			now := g.clock.Now()
			var known bool
			r, known = g.admission.check(captureID, it.agentID, now)
			if !known && !loaded[captureID] {
				loaded[captureID] = true
				if err := g.admission.load(ctx, g.store, captureID, now); err != nil {
					// Not acked: the agent sends it again after a reconnect.
					g.log.Warn("look up capture of an event", "capture_id", captureID, "err", err)
					continue
				}
				r, known = g.admission.check(captureID, it.agentID, now)
			}
			if !known {
				continue // the look-up failed earlier in this batch
			}
		}
		if r != nil {
			g.refusals.refuse(it.agentID, captureID, r)
			ack(it, r)
			continue
		}
		ev := it.ev
		ev.Signature = Signature(ev, DefaultSignatureFrames)
		rows = append(rows, store.Event{
			ID: ev.GetId(), CaptureID: ev.GetCaptureId(), AgentID: it.agentID, Time: ev.GetTime().AsTime(),
			PID: int(ev.GetPid()), TID: int(ev.GetTid()), Process: ev.GetProcess(), Probe: ev.GetProbe(), Status: ev.GetStatus(),
			User: framesJSON(ev.GetUserFrames()), Kernel: framesJSON(ev.GetKernelFrames()), Signature: ev.GetSignature(),
		})
		accepted = append(accepted, it)
	}
	if len(rows) > 0 {
		start := time.Now()
		n, err := g.store.InsertEvents(ctx, rows)
		if err != nil {
			// Not acked: the agents keep the events spooled and send
			// them again when they reconnect, so make them reconnect,
			// perhaps to a replica that reaches the store.
			g.log.Error("store events", "count", len(rows), "err", err)
			for _, it := range batch {
				if it.sess != nil {
					it.sess.End(fleet.ErrStoreUnavailable)
				}
			}
			return
		}
		g.metrics.ingestSeconds.Observe(time.Since(start).Seconds())
		g.metrics.events.Add(float64(n))
		g.metrics.duplicates.Add(float64(len(rows) - n))
		captures := map[string]bool{}
		hosts := map[string]string{}
		for i, it := range accepted {
			ack(it, nil)
			captures[it.ev.GetCaptureId()] = true
			if g.watchers.watched(it.ev.GetCaptureId()) {
				g.watchers.publishEvent(eventProto(rows[i], g.hostname(ctx, hosts, it.agentID)))
			}
		}
		if n > 0 {
			g.kick.Kick() // max-dumps may be reached
			for id := range captures {
				g.peers.EventsStored(ctx, id)
			}
		}
	}
	for s, a := range acks {
		_ = s.Send(&livedumpv1.ConnectResponse{Msg: &livedumpv1.ConnectResponse_EventAck{EventAck: a}})
	}
	g.statuses.applyStatuses(ctx, statuses)
}

// hostname is the agent's hostname as the controller stores it (never what
// an event claims), read once per batch.
func (g *ingester) hostname(ctx context.Context, memo map[string]string, agentID string) string {
	h, ok := memo[agentID]
	if !ok {
		if a, err := g.store.GetAgent(ctx, agentID); err == nil {
			h = a.Hostname
		}
		memo[agentID] = h
	}
	return h
}

// ingestMetrics are the ingester's: events stored, duplicates dropped, and
// the time a batch takes to store.
type ingestMetrics struct {
	events        prometheus.Counter
	duplicates    prometheus.Counter
	ingestSeconds prometheus.Histogram
}

func newIngestMetrics(reg prometheus.Registerer) ingestMetrics {
	mt := ingestMetrics{
		events:     prometheus.NewCounter(prometheus.CounterOpts{Name: "livedump_controller_trigger_events_total", Help: "Trigger events stored."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "livedump_controller_trigger_events_duplicate_total", Help: "Trigger events received again and dropped by ID."}),
		ingestSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "livedump_controller_event_batch_store_seconds", Help: "Time to store one batch of trigger events.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
	}
	if reg != nil {
		reg.MustRegister(mt.events, mt.duplicates, mt.ingestSeconds)
	}
	return mt
}
