package capture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/store"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// claimChunk is how many targets one delivery transaction claims.
const claimChunk = 500

// rollout arms targets: at every scheduler pass it expires captures,
// enforces their limits and delivers the arm directive to online targets
// within the rollout rate, once per agent session. It records the agents'
// acks and the target states they report.
type rollout struct {
	rolloutConfig
	metrics rolloutMetrics

	mu       sync.Mutex
	sent     map[*fleet.Session]map[string]bool // captures sent on each live session
	sentAt   map[string]time.Time               // agent/directive -> when sent, for ack latency
	forgotAt time.Time                          // last forgetClosedSessions walk
	created  map[string][]store.CaptureTarget   // targets of captures this replica just created (handOff)
}

// rolloutStore is what the rollout reads and writes.
type rolloutStore interface {
	GetCapture(ctx context.Context, id string) (store.Capture, error)
	ListCaptures(ctx context.Context, state string) ([]store.Capture, error)
	ListTargets(ctx context.Context, captureID string) ([]store.CaptureTarget, error)
	ClaimTargets(ctx context.Context, captureID string, agentIDs []string, allowed int, at time.Time) ([]string, error)
	SetTargetStates(ctx context.Context, updates []store.CaptureTarget) (int, error)
}

// sessions finds the stream an agent holds on this replica.
type sessions interface {
	Session(agentID string) *fleet.Session
}

// ender ends a capture (see lifecycle.end).
type ender interface {
	end(ctx context.Context, c store.Capture, state, detail, reason string) error
}

// targetPublisher is what the rollout tells watchers.
type targetPublisher interface {
	watched(captureID string) bool
	relay(ctx context.Context, captureID string)
	publishTarget(ctx context.Context, captureID, agentID string)
}

// refresher takes the active captures and their targets after a pass.
type refresher interface {
	refresh(active map[string]map[string]struct{})
}

// fullForgetter drops per-agent state that has returned to its start.
type fullForgetter interface{ forgetFull(now time.Time) }

type rolloutConfig struct {
	store     rolloutStore
	sessions  sessions
	clock     clockwork.Clock
	log       *slog.Logger
	queue     chan<- ingest
	kick      wakeup
	ender     ender
	watchers  targetPublisher
	admission refresher
	limits    fullForgetter
	reg       prometheus.Registerer
}

func newRollout(c rolloutConfig) *rollout {
	return &rollout{
		rolloutConfig: c,
		metrics:       newRolloutMetrics(c.reg),
		sent:          map[*fleet.Session]map[string]bool{},
		sentAt:        map[string]time.Time{},
		created:       map[string][]store.CaptureTarget{},
	}
}

// handOff gives the next scheduler pass the targets of a capture this
// replica has just stored, so that pass claims and arms them without
// reading them back: at 10,000 targets that read was a third of the pass
// that sends the first arm directives. The targets are all pending as
// stored; a claim that another replica won in between fails in the store
// as it would otherwise, and the pass after reads the targets again.
func (r *rollout) handOff(captureID string, targets []store.CaptureTarget) {
	if len(targets) == 0 {
		return
	}
	r.mu.Lock()
	r.created[captureID] = targets
	r.mu.Unlock()
}

// takeCreated returns what handOff gave since the last pass.
func (r *rollout) takeCreated() map[string][]store.CaptureTarget {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.created) == 0 {
		return nil
	}
	m := r.created
	r.created = map[string][]store.CaptureTarget{}
	return m
}

// schedule expires captures, enforces max-dumps and delivers to online
// targets within the rollout rate. Offline targets stay pending: an agent
// that connects before expiry gets the capture.
func (r *rollout) schedule(ctx context.Context) error {
	// Taken before the captures are listed: every capture handed off is
	// stored by then, so the list has it unless it already ended.
	created := r.takeCreated()
	caps, err := r.store.ListCaptures(ctx, StateActive)
	if err != nil {
		return err
	}
	now := r.clock.Now().UTC()
	if all, err := r.store.ListCaptures(ctx, ""); err == nil {
		counts := map[string]int{}
		for _, st := range captureStates {
			counts[st] = 0
		}
		for _, c := range all {
			counts[c.State]++
		}
		for st, n := range counts {
			r.metrics.byState.WithLabelValues(st).Set(float64(n))
		}
	}
	// The catch-up for watchers: events other replicas stored are read
	// at every tick, whether or not their notification arrived.
	for _, c := range caps {
		if r.watchers.watched(c.ID) {
			r.watchers.relay(ctx, c.ID)
		}
	}
	// What the ingest path admits events for: the captures still active
	// after this pass, and their targets.
	fresh := make(map[string]map[string]struct{}, len(caps))
	for _, c := range caps {
		if !now.Before(c.Expires) {
			if err := r.ender.end(ctx, c, StateExpired, "expired", "expired"); err != nil {
				return err
			}
			continue
		}
		spec := &livedumpv1.CaptureSpec{}
		if err := protojson.Unmarshal([]byte(c.Spec), spec); err != nil {
			return err
		}
		targets, ok := created[c.ID]
		if !ok {
			if targets, err = r.store.ListTargets(ctx, c.ID); err != nil {
				return err
			}
		}
		var total int64
		open := 0
		for _, t := range targets {
			total += t.Events
			if !targetTerminal(t.State) {
				open++
			}
		}
		if spec.GetAction() == livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP && spec.GetMaxDumps() > 0 && total >= int64(spec.GetMaxDumps()) {
			if err := r.ender.end(ctx, c, StateDone, fmt.Sprintf("max-dumps %d reached", spec.GetMaxDumps()), "max-dumps"); err != nil {
				return err
			}
			continue
		}
		if open == 0 {
			state, detail := outcome(targets)
			if err := r.ender.end(ctx, c, state, detail, "done"); err != nil {
				return err
			}
			continue
		}
		set := make(map[string]struct{}, len(targets))
		for _, t := range targets {
			set[t.AgentID] = struct{}{}
		}
		fresh[c.ID] = set
		// Rollout: rate agents per minute since creation, the first at once.
		allowed := -1
		if rr := spec.GetRolloutRate(); rr > 0 {
			allowed = 1 + int(now.Sub(c.Created).Minutes()*float64(rr))
		}
		var statuses []uint32
		var resolved []*livedumpv1.ResolvedStatus
		if err := json.Unmarshal([]byte(c.Statuses), &resolved); err != nil {
			return err
		}
		for _, rs := range resolved {
			statuses = append(statuses, rs.GetNtstatus()...)
		}
		slices.Sort(statuses)
		statuses = slices.Compact(statuses)
		arm := armOf(c.ID, spec, statuses, c.Expires)
		// Every new session gets the directive again: arming is idempotent
		// on the agent, and a restarted agent may have lost nothing or
		// everything.
		send := func(agentID string, s *fleet.Session) {
			d := &livedumpv1.Directive{Id: "arm-" + c.ID, Created: timestamppb.New(now), Kind: &livedumpv1.Directive_Arm{Arm: arm}}
			if err := s.Send(&livedumpv1.ConnectResponse{Msg: &livedumpv1.ConnectResponse_Directive{Directive: d}}); err != nil {
				return
			}
			r.markSent(s, c.ID)
			r.metrics.directives.Inc()
			r.mu.Lock()
			r.sentAt[agentID+"/"+d.GetId()] = time.Now()
			r.mu.Unlock()
		}
		var pending []string
		for _, t := range targets {
			if targetTerminal(t.State) {
				continue
			}
			s := r.sessions.Session(t.AgentID)
			if s == nil || r.wasSent(s, c.ID) {
				continue
			}
			if t.State == TargetPending {
				pending = append(pending, t.AgentID)
				continue
			}
			send(t.AgentID, s)
		}
		if len(pending) == 0 {
			continue
		}
		// The rollout limit is counted in the store, one transaction per
		// chunk of targets this replica can reach now, so replicas
		// delivering at once cannot exceed it together. Chunks let the
		// first directives leave while later targets are being claimed.
		for chunk := range slices.Chunk(pending, claimChunk) {
			claimed, err := r.store.ClaimTargets(ctx, c.ID, chunk, allowed, now)
			if err != nil {
				return err
			}
			for _, a := range claimed {
				if s := r.sessions.Session(a); s != nil {
					send(a, s)
				}
				r.watchers.publishTarget(ctx, c.ID, a)
			}
		}
	}
	r.admission.refresh(fresh)
	r.forgetClosedSessions()
	return nil
}

// captureStates are the stored capture states, the label values of the
// captures-by-state metric.
var captureStates = []string{StateActive, StateDone, StateFailed, StateExpired, StateCancelled}

// outcome is how a capture whose targets have all finished ends: failed
// when every one of them failed (nothing was armed anywhere that ran to
// its end), done otherwise; a done capture's target counts show any
// failures. The detail of a failed capture quotes one target's reason, the
// most common one, so the operator sees why without reading every target.
func outcome(targets []store.CaptureTarget) (state, detail string) {
	reasons := map[string]int{}
	for _, t := range targets {
		if t.State != TargetFailed {
			return StateDone, "every target finished"
		}
		reasons[t.Detail]++
	}
	if len(targets) == 0 {
		return StateDone, "every target finished"
	}
	why, n := "", 0
	for r, c := range reasons {
		if c > n || c == n && r < why {
			why, n = r, c
		}
	}
	switch {
	case why == "":
		detail = fmt.Sprintf("every target failed (%d)", len(targets))
	case len(targets) == 1:
		detail = "every target failed: " + why
	case n == len(targets):
		detail = fmt.Sprintf("every target failed (%d): %s", len(targets), why)
	default:
		detail = fmt.Sprintf("every target failed (%d); %d with: %s", len(targets), n, why)
	}
	if len(detail) > 1024 {
		detail = strings.ToValidUTF8(detail[:1024], "")
	}
	return StateFailed, detail
}

// Acked records an agent's answer to a directive. A rejected arm (the agent
// refused the spec, e.g. an older agent) fails that target with the reason.
func (r *rollout) Acked(ctx context.Context, agentID string, ack *livedumpv1.Ack) {
	key := agentID + "/" + ack.GetDirectiveId()
	r.mu.Lock()
	at, ok := r.sentAt[key]
	delete(r.sentAt, key)
	r.mu.Unlock()
	if !ok {
		return // not a capture directive, or sent before a controller restart
	}
	r.metrics.ackSeconds.Observe(time.Since(at).Seconds())
	if ack.GetError() == "" {
		r.metrics.acked.WithLabelValues("ok").Inc()
		return
	}
	r.metrics.acked.WithLabelValues("rejected").Inc()
	if id, ok := strings.CutPrefix(ack.GetDirectiveId(), "arm-"); ok {
		r.Status(ctx, agentID, &livedumpv1.CaptureStatus{CaptureId: id, State: livedumpv1.TargetState_TARGET_STATE_FAILED, Detail: "agent refused the capture: " + ack.GetError()})
	}
}

func (r *rollout) wasSent(s *fleet.Session, id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sent[s][id]
}

func (r *rollout) markSent(s *fleet.Session, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sent[s] == nil {
		r.sent[s] = map[string]bool{}
	}
	r.sent[s][id] = true
}

func (r *rollout) forgetClosedSessions() {
	r.mu.Lock()
	defer r.mu.Unlock()
	// A walk over every session: the scheduler runs at every kick, so the
	// walk runs at most every 10 s (at 10k agents it was a fifth of the
	// controller's CPU during a fan-out).
	if time.Since(r.forgotAt) < 10*time.Second {
		return
	}
	r.forgotAt = time.Now()
	r.limits.forgetFull(r.clock.Now())
	for s := range r.sent {
		if s.Closed() {
			delete(r.sent, s)
		}
	}
	// Directives never acked (the agent went away) are forgotten after a
	// while, so the map cannot grow without bound.
	for k, at := range r.sentAt {
		if time.Since(at) > 10*time.Minute {
			delete(r.sentAt, k)
		}
	}
}

// Status records a target state an agent reported. States go through the
// ingest queue behind the agent's events, so a capture never ends (and its
// watchers never see the end) before its last events are stored, and they
// are written in batches: a fan-out to 10,000 agents is answered by 10,000
// "armed" reports.
func (r *rollout) Status(ctx context.Context, agentID string, st *livedumpv1.CaptureStatus) {
	if targetStateName(st.GetState()) == "" {
		return
	}
	select {
	case r.queue <- ingest{agentID: agentID, status: st}:
	case <-ctx.Done():
	}
}

// applyStatuses records a batch of reported states in one transaction; the
// ingester calls it with the states of each batch it takes off the queue.
func (r *rollout) applyStatuses(ctx context.Context, items []ingest) {
	now := r.clock.Now().UTC()
	states := map[string]string{} // capture -> state; "" for unknown
	var ups []store.CaptureTarget
	terminal := false
	for _, it := range items {
		st := it.status
		name := targetStateName(st.GetState())
		id := st.GetCaptureId()
		cs, ok := states[id]
		if !ok {
			if c, err := r.store.GetCapture(ctx, id); err == nil {
				cs = c.State
			}
			states[id] = cs
		}
		if cs == "" {
			continue // unknown capture: nothing to record
		}
		if cs != StateActive && !targetTerminal(name) {
			continue // a late report must not reopen an ended capture's target
		}
		detail := st.GetDetail()
		if len(detail) > 1024 {
			detail = detail[:1024]
		}
		ups = append(ups, store.CaptureTarget{CaptureID: id, AgentID: it.agentID, State: name, Detail: detail, Updated: now})
		terminal = terminal || targetTerminal(name)
	}
	if len(ups) == 0 {
		return
	}
	if _, err := r.store.SetTargetStates(ctx, ups); err != nil {
		r.log.Warn("record capture statuses", "count", len(ups), "err", err)
		return
	}
	for _, u := range ups {
		r.watchers.publishTarget(ctx, u.CaptureID, u.AgentID)
	}
	if terminal {
		r.kick.Kick()
	}
}

// DumpLimits returns a capture's upload limits: --max-dumps for a dump
// capture and --dumps-per-signature. An unknown capture has none.
func (r *rollout) DumpLimits(ctx context.Context, id string) (maxDumps, perSignature int, err error) {
	c, err := r.store.GetCapture(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	spec := &livedumpv1.CaptureSpec{}
	if err := protojson.Unmarshal([]byte(c.Spec), spec); err != nil {
		return 0, 0, err
	}
	if spec.GetAction() == livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP || spec.GetOnDemand() {
		maxDumps = int(spec.GetMaxDumps())
	}
	return maxDumps, int(spec.GetDumpsPerSignature()), nil
}

// rolloutMetrics are the rollout's: directives sent and acked, and captures
// by state.
type rolloutMetrics struct {
	directives prometheus.Counter
	acked      *prometheus.CounterVec
	ackSeconds prometheus.Histogram
	byState    *prometheus.GaugeVec
}

func newRolloutMetrics(reg prometheus.Registerer) rolloutMetrics {
	mt := rolloutMetrics{
		directives: prometheus.NewCounter(prometheus.CounterOpts{Name: "livedump_controller_directives_sent_total", Help: "Capture directives (arm, disarm) sent to agents."}),
		acked: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "livedump_controller_directives_acked_total", Help: "Capture directives answered by agents, by result (ok, rejected)."},
			[]string{"result"}),
		ackSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "livedump_controller_directive_ack_seconds", Help: "Time from sending a capture directive to the agent's ack.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		byState: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "livedump_controller_captures", Help: "Captures by state."}, []string{"state"}),
	}
	if reg != nil {
		for _, r := range []string{"ok", "rejected"} {
			mt.acked.WithLabelValues(r)
		}
		for _, st := range captureStates {
			mt.byState.WithLabelValues(st)
		}
		reg.MustRegister(mt.directives, mt.acked, mt.ackSeconds, mt.byState)
	}
	return mt
}
