// Package capture is the controller's side of captures: it validates and
// stores them, arms their targets at the rollout rate (queuing offline agents
// until expiry), ingests trigger events in batches, enforces the fleet-wide
// dump limit and expiry, and feeds live watchers.
package capture

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/ntstatus"
	"github.com/livedump/livedump/internal/probe"
	"github.com/livedump/livedump/internal/selector"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// claimChunk is how many targets one delivery transaction claims.
const claimChunk = 500

// Limits of a capture.
const (
	DefaultExpire = 24 * time.Hour
	MaxExpire     = 7 * 24 * time.Hour
	MinExpire     = time.Minute
	MaxStatuses   = 64
	MaxRollout    = 100000
	MaxRawScript  = 64 << 10
)

// Capture states as stored.
const (
	StateActive    = "active"
	StateDone      = "done"
	StateExpired   = "expired"
	StateCancelled = "cancelled"
)

// Target states as stored.
const (
	TargetPending   = "pending"
	TargetDelivered = "delivered"
	TargetArmed     = "armed"
	TargetTriggered = "triggered"
	TargetDumping   = "dumping"
	TargetDone      = "done"
	TargetFailed    = "failed"
	TargetExpired   = "expired"
	TargetCancelled = "cancelled"
)

func targetTerminal(s string) bool {
	switch s {
	case TargetDone, TargetFailed, TargetExpired, TargetCancelled:
		return true
	}
	return false
}

// FieldError names the spec field that was rejected.
type FieldError struct{ Field, Reason string }

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Config configures a Manager.
type Config struct {
	Store   store.Store
	Fleet   *fleet.Registry
	Logger  *slog.Logger
	Clock   clockwork.Clock
	Metrics prometheus.Registerer
	// Tick is how often delivery, expiry and limits are checked.
	Tick time.Duration
	// BatchSize and BatchDelay bound event ingest batching.
	BatchSize  int
	BatchDelay time.Duration
	// Router reaches agents attached to other replicas and tells them about
	// captures; nil: this process is the only controller.
	Router Router
	// EventRate and EventBurst bound the events one agent may send, per
	// second and at once (default DefaultEventRate, DefaultEventBurst); the
	// excess is refused.
	EventRate  float64
	EventBurst int
}

// Router is what the manager needs from the cluster of replicas.
type Router interface {
	// Send delivers a directive that needs no report to the agent,
	// wherever its stream is.
	Send(ctx context.Context, agentID string, d *livedumpv1.Directive) error
	// CaptureChanged tells the other replicas a capture was created or ended.
	CaptureChanged(ctx context.Context, captureID string)
	// EventsStored tells the other replicas a capture has new events.
	EventsStored(ctx context.Context, captureID string)
}

// localRouter serves a single controller.
type localRouter struct{ fleet *fleet.Registry }

func (r localRouter) Send(_ context.Context, agentID string, d *livedumpv1.Directive) error {
	s := r.fleet.Session(agentID)
	if s == nil {
		return fleet.ErrOffline
	}
	return s.Send(&livedumpv1.ConnectResponse{Msg: &livedumpv1.ConnectResponse_Directive{Directive: d}})
}
func (localRouter) CaptureChanged(context.Context, string) {}
func (localRouter) EventsStored(context.Context, string)   {}

// Manager runs captures on the controller.
type Manager struct {
	cfg Config
	log *slog.Logger

	kick chan struct{}
	in   chan ingest

	mu       sync.Mutex
	sent     map[*fleet.Session]map[string]bool // captures sent on each live session
	sentAt   map[string]time.Time               // agent/directive -> when sent, for ack latency
	watchers map[string]map[chan *livedumpv1.WatchCaptureResponse]struct{}
	relays   map[string]*relayState
	forgotAt time.Time // last forgetClosedSessions walk

	adm    *admission
	limits *limiters
	rmu    sync.Mutex
	// refused sums each agent's refused events for the audit log.
	refused map[string]*refusals

	metrics metrics
}

type ingest struct {
	agentID string
	ev      *livedumpv1.TriggerEvent
	sess    *fleet.Session
	status  *livedumpv1.CaptureStatus // a final target state, applied after the events before it
	refused *refusal                  // refused before it was queued; ev holds only the IDs
}

// New returns a Manager.
func New(cfg Config) *Manager {
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 512
	}
	if cfg.BatchDelay <= 0 {
		cfg.BatchDelay = 50 * time.Millisecond
	}
	if cfg.Router == nil {
		cfg.Router = localRouter{cfg.Fleet}
	}
	if cfg.EventRate <= 0 {
		cfg.EventRate = DefaultEventRate
	}
	if cfg.EventBurst <= 0 {
		cfg.EventBurst = DefaultEventBurst
	}
	m := &Manager{
		cfg: cfg, log: cfg.Logger,
		kick:     make(chan struct{}, 1),
		in:       make(chan ingest, 4096),
		sent:     map[*fleet.Session]map[string]bool{},
		sentAt:   map[string]time.Time{},
		watchers: map[string]map[chan *livedumpv1.WatchCaptureResponse]struct{}{},
		relays:   map[string]*relayState{},
		adm:      newAdmission(),
		limits:   &limiters{rate: rate.Limit(cfg.EventRate), burst: cfg.EventBurst, m: map[string]*rate.Limiter{}},
		refused:  map[string]*refusals{},
	}
	m.metrics = newMetrics(cfg.Metrics, m)
	return m
}

// Kick asks the scheduler to run now, e.g. when an agent connects.
func (m *Manager) Kick() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Run schedules deliveries and ingests events until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); m.ingestLoop(ctx) }()
	t := m.cfg.Clock.NewTicker(m.cfg.Tick)
	defer t.Stop()
	for {
		if err := m.schedule(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("capture scheduler", "err", err)
		}
		m.flushRefusals(false)
		select {
		case <-ctx.Done():
			wg.Wait()
			m.flushRefusals(true)
			return nil
		case <-t.Chan():
		case <-m.kick:
		}
	}
}

func newID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "c-" + hex.EncodeToString(b)
}

// Request is a validated capture request.
type Request struct {
	Spec  *livedumpv1.CaptureSpec
	Actor string
	Admin bool
}

// Create validates spec, resolves its statuses, renders its probe, picks
// the targets and stores everything; nothing is stored for a rejected spec.
func (m *Manager) Create(ctx context.Context, r Request) (*livedumpv1.Capture, error) {
	spec := r.Spec
	if spec == nil {
		return nil, &FieldError{"spec", "missing"}
	}
	sel, err := selector.ParseRequired(spec.GetSelector())
	if err != nil {
		return nil, &FieldError{"selector", err.Error()}
	}
	expire := DefaultExpire
	if d := spec.GetExpire(); d != nil {
		if err := d.CheckValid(); err != nil {
			return nil, &FieldError{"expire", err.Error()}
		}
		expire = d.AsDuration()
	}
	if expire < MinExpire || expire > MaxExpire {
		return nil, &FieldError{"expire", fmt.Sprintf("must be between %s and %s, got %s", MinExpire, MaxExpire, expire)}
	}
	if spec.GetRolloutRate() > MaxRollout {
		return nil, &FieldError{"rollout_rate", fmt.Sprintf("at most %d agents per minute", MaxRollout)}
	}
	if spec.GetScript() != "" {
		if !r.Admin {
			return nil, &FieldError{"script", "raw D scripts need the admin role"}
		}
		if len(spec.GetScript()) > MaxRawScript {
			return nil, &FieldError{"script", fmt.Sprintf("longer than %d bytes", MaxRawScript)}
		}
	}
	if len(spec.GetStatuses()) > MaxStatuses {
		return nil, &FieldError{"status", fmt.Sprintf("at most %d status codes", MaxStatuses)}
	}
	var resolved []*livedumpv1.ResolvedStatus
	var values []uint32
	for _, s := range spec.GetStatuses() {
		res, err := ntstatus.Resolve(s)
		if err != nil {
			return nil, &FieldError{"status", err.Error()}
		}
		resolved = append(resolved, &livedumpv1.ResolvedStatus{Input: res.Input, Kind: string(res.Kind), Name: res.Name, Ntstatus: res.NTStatus, Note: res.Note})
		values = append(values, res.NTStatus...)
	}
	slices.Sort(values)
	values = slices.Compact(values)
	if len(values) > MaxStatuses {
		return nil, &FieldError{"status", fmt.Sprintf("the codes resolve to %d NTSTATUS values; at most %d fit in one probe", len(values), MaxStatuses)}
	}
	id := newID()
	arm := armOf(id, spec, values, time.Time{})
	ps := probe.FromArm(arm)
	var rendered string
	var warnings []string
	if spec.GetScript() == "" {
		if err := ps.Validate(); err != nil {
			var fe *probe.FieldError
			if errors.As(err, &fe) {
				return nil, &FieldError{fe.Field, fe.Reason}
			}
			return nil, &FieldError{"spec", err.Error()}
		}
		if rendered, err = probe.Render(ps, 0); err != nil {
			return nil, &FieldError{"spec", err.Error()}
		}
		warnings = ps.Warnings() // truncated names, names without an extension
	} else {
		rendered = spec.GetScript()
	}

	now := m.cfg.Clock.Now().UTC()
	agents, err := m.cfg.Store.ListAgents(ctx)
	if err != nil {
		return nil, err
	}
	var targets []store.CaptureTarget
	for _, a := range agents {
		if a.Revoked || !sel.Matches(agentLabels(a)) {
			continue
		}
		targets = append(targets, store.CaptureTarget{AgentID: a.ID, State: TargetPending, Updated: now})
	}
	specJSON, err := protojson.Marshal(spec)
	if err != nil {
		return nil, err
	}
	statusJSON, err := json.Marshal(resolved)
	if err != nil {
		return nil, err
	}
	c := store.Capture{
		ID: id, Spec: string(specJSON), State: StateActive, Created: now, Expires: now.Add(expire),
		CreatedBy: r.Actor, Rendered: rendered, Statuses: string(statusJSON), Warnings: warnings,
	}
	if len(targets) == 0 {
		c.State, c.Detail = StateDone, "no agent matches the selector"
	}
	if err := m.cfg.Store.CreateCapture(ctx, c, targets); err != nil {
		return nil, err
	}
	m.log.Info("capture created", "capture_id", id, "targets", len(targets), "by", r.Actor)
	m.Kick()
	m.cfg.Router.CaptureChanged(ctx, id)
	return m.Get(ctx, id)
}

func agentLabels(a store.Agent) map[string]string {
	l := map[string]string{}
	for k, v := range a.Labels {
		l[k] = v
	}
	l[selector.LabelHostname] = a.Hostname
	l[selector.LabelOSBuild] = a.OSBuild
	return l
}

func armOf(id string, spec *livedumpv1.CaptureSpec, statuses []uint32, expires time.Time) *livedumpv1.ArmCapture {
	a := &livedumpv1.ArmCapture{
		CaptureId: id, Processes: spec.GetProcesses(), Syscalls: spec.GetSyscalls(), Statuses: statuses,
		Ustack: spec.GetUstack(), Kstack: spec.GetKstack(), Action: spec.GetAction(), LkdMode: spec.GetLkdMode(),
		PerAgentCap: spec.GetPerAgentCap(), Script: spec.GetScript(), Upload: spec.GetUpload(), OnDemand: spec.GetOnDemand(),
	}
	if spec.GetOnDemand() {
		a.Action = livedumpv1.CaptureAction_CAPTURE_ACTION_DUMP
	}
	if !expires.IsZero() {
		a.Expires = timestamppb.New(expires)
	}
	return a
}

// Get returns a capture with its targets.
func (m *Manager) Get(ctx context.Context, id string) (*livedumpv1.Capture, error) {
	c, err := m.cfg.Store.GetCapture(ctx, id)
	if err != nil {
		return nil, err
	}
	targets, err := m.cfg.Store.ListTargets(ctx, id)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, t := range targets {
		want[t.AgentID] = true
	}
	hosts, err := store.Hostnames(ctx, m.cfg.Store, want)
	if err != nil {
		hosts = nil // the capture without hostnames rather than none
	}
	return toProto(c, targets, hosts)
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
		p.Events += t.Events
	}
	return p, nil
}

func targetProto(t store.CaptureTarget, hostname string) *livedumpv1.CaptureTarget {
	return &livedumpv1.CaptureTarget{
		AgentId: t.AgentID, Hostname: hostname, State: TargetStateValue(t.State), Detail: t.Detail, Events: t.Events, Updated: timestamppb.New(t.Updated),
	}
}

func captureStateValue(s string) livedumpv1.CaptureState {
	switch s {
	case StateActive:
		return livedumpv1.CaptureState_CAPTURE_STATE_ACTIVE
	case StateDone:
		return livedumpv1.CaptureState_CAPTURE_STATE_DONE
	case StateExpired:
		return livedumpv1.CaptureState_CAPTURE_STATE_EXPIRED
	case StateCancelled:
		return livedumpv1.CaptureState_CAPTURE_STATE_CANCELLED
	}
	return livedumpv1.CaptureState_CAPTURE_STATE_UNSPECIFIED
}

var targetStates = map[string]livedumpv1.TargetState{
	TargetPending: livedumpv1.TargetState_TARGET_STATE_PENDING, TargetDelivered: livedumpv1.TargetState_TARGET_STATE_DELIVERED,
	TargetArmed: livedumpv1.TargetState_TARGET_STATE_ARMED, TargetTriggered: livedumpv1.TargetState_TARGET_STATE_TRIGGERED,
	TargetDumping: livedumpv1.TargetState_TARGET_STATE_DUMPING, TargetDone: livedumpv1.TargetState_TARGET_STATE_DONE,
	TargetFailed: livedumpv1.TargetState_TARGET_STATE_FAILED, TargetExpired: livedumpv1.TargetState_TARGET_STATE_EXPIRED,
	TargetCancelled: livedumpv1.TargetState_TARGET_STATE_CANCELLED,
}

// TargetStateValue maps a stored target state to the wire enum.
func TargetStateValue(s string) livedumpv1.TargetState { return targetStates[s] }

func targetStateName(v livedumpv1.TargetState) string {
	for k, x := range targetStates {
		if x == v {
			return k
		}
	}
	return ""
}

// List returns every capture, newest first, without targets' hostnames.
func (m *Manager) List(ctx context.Context) ([]*livedumpv1.Capture, error) {
	cs, err := m.cfg.Store.ListCaptures(ctx, "")
	if err != nil {
		return nil, err
	}
	var out []*livedumpv1.Capture
	for _, c := range cs {
		targets, err := m.cfg.Store.ListTargets(ctx, c.ID)
		if err != nil {
			return nil, err
		}
		p, err := toProto(c, targets, nil)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Cancel ends a capture and disarms every target.
func (m *Manager) Cancel(ctx context.Context, id, actor string) (*livedumpv1.Capture, error) {
	c, err := m.cfg.Store.GetCapture(ctx, id)
	if err != nil {
		return nil, err
	}
	if c.State == StateActive {
		if err := m.end(ctx, c, StateCancelled, "cancelled by "+actor, "cancelled"); err != nil {
			return nil, err
		}
	}
	return m.Get(ctx, id)
}

// end stores the capture's final state, disarms live targets and closes
// watchers. Only the replica whose FinishCapture ended the capture does the
// rest, so targets are disarmed once.
func (m *Manager) end(ctx context.Context, c store.Capture, state, detail, reason string) error {
	changed, err := m.cfg.Store.FinishCapture(ctx, c.ID, state, detail)
	if err != nil {
		return err
	}
	m.adm.ended(c.ID)
	if !changed {
		m.publishEnded(ctx, c.ID)
		return nil
	}
	targets, err := m.cfg.Store.ListTargets(ctx, c.ID)
	if err != nil {
		return err
	}
	now := m.cfg.Clock.Now().UTC()
	tstate := map[string]string{StateCancelled: TargetCancelled, StateExpired: TargetExpired, StateDone: TargetCancelled}[state]
	var ups []store.CaptureTarget
	for _, t := range targets {
		if targetTerminal(t.State) {
			continue
		}
		if t.State != TargetPending {
			d := &livedumpv1.Directive{Id: "disarm-" + c.ID, Created: timestamppb.New(now),
				Kind: &livedumpv1.Directive_Disarm{Disarm: &livedumpv1.DisarmCapture{CaptureId: c.ID, Reason: reason}}}
			if err := m.cfg.Router.Send(ctx, t.AgentID, d); err != nil {
				m.log.Debug("disarm not sent", "capture_id", c.ID, "agent_id", t.AgentID, "err", err)
			}
		}
		ups = append(ups, store.CaptureTarget{CaptureID: c.ID, AgentID: t.AgentID, State: tstate, Detail: detail, Updated: now})
	}
	if _, err := m.cfg.Store.SetTargetStates(ctx, ups); err != nil {
		return err
	}
	m.log.Info("capture ended", "capture_id", c.ID, "state", state, "detail", detail)
	m.cfg.Router.CaptureChanged(ctx, c.ID)
	m.publishEnded(ctx, c.ID)
	return nil
}

// publishEnded gives local watchers the capture's final state.
func (m *Manager) publishEnded(ctx context.Context, id string) {
	if !m.watched(id) {
		return
	}
	// Events another replica stored whose notification never came are
	// read now, so the watcher has them all before the end.
	m.relay(ctx, id)
	if p, err := m.Get(ctx, id); err == nil {
		p = Trim(p, MessageBudget) // one message: the targets are on GetCapture's pages
		m.publish(id, &livedumpv1.WatchCaptureResponse{Msg: &livedumpv1.WatchCaptureResponse_Ended{Ended: p}}, true)
	}
}

// Remote is called when another replica created or ended a capture: the
// scheduler runs now, and local watchers of an ended capture are told.
func (m *Manager) Remote(captureID string) {
	m.Kick()
	if !m.watched(captureID) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, err := m.cfg.Store.GetCapture(ctx, captureID); err == nil && c.State != StateActive {
		m.publishEnded(ctx, captureID)
	}
}

// schedule expires captures, enforces max-dumps and delivers to online
// targets within the rollout rate. Offline targets stay pending: an agent
// that connects before expiry gets the capture.
func (m *Manager) schedule(ctx context.Context) error {
	caps, err := m.cfg.Store.ListCaptures(ctx, StateActive)
	if err != nil {
		return err
	}
	now := m.cfg.Clock.Now().UTC()
	if all, err := m.cfg.Store.ListCaptures(ctx, ""); err == nil {
		counts := map[string]int{StateActive: 0, StateDone: 0, StateExpired: 0, StateCancelled: 0}
		for _, c := range all {
			counts[c.State]++
		}
		for st, n := range counts {
			m.metrics.byState.WithLabelValues(st).Set(float64(n))
		}
	}
	// The catch-up for watchers: events other replicas stored are read
	// at every tick, whether or not their notification arrived.
	for _, c := range caps {
		if m.watched(c.ID) {
			m.relay(ctx, c.ID)
		}
	}
	// What the ingest path admits events for: the captures still active
	// after this pass, and their targets.
	fresh := make(map[string]map[string]struct{}, len(caps))
	for _, c := range caps {
		if !now.Before(c.Expires) {
			if err := m.end(ctx, c, StateExpired, "expired", "expired"); err != nil {
				return err
			}
			continue
		}
		spec := &livedumpv1.CaptureSpec{}
		if err := protojson.Unmarshal([]byte(c.Spec), spec); err != nil {
			return err
		}
		targets, err := m.cfg.Store.ListTargets(ctx, c.ID)
		if err != nil {
			return err
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
			if err := m.end(ctx, c, StateDone, fmt.Sprintf("max-dumps %d reached", spec.GetMaxDumps()), "max-dumps"); err != nil {
				return err
			}
			continue
		}
		if open == 0 {
			if err := m.end(ctx, c, StateDone, "every target finished", "done"); err != nil {
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
		if r := spec.GetRolloutRate(); r > 0 {
			allowed = 1 + int(now.Sub(c.Created).Minutes()*float64(r))
		}
		var statuses []uint32
		var resolved []*livedumpv1.ResolvedStatus
		if err := json.Unmarshal([]byte(c.Statuses), &resolved); err != nil {
			return err
		}
		for _, r := range resolved {
			statuses = append(statuses, r.GetNtstatus()...)
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
			m.markSent(s, c.ID)
			m.metrics.directives.Inc()
			m.mu.Lock()
			m.sentAt[agentID+"/"+d.GetId()] = time.Now()
			m.mu.Unlock()
		}
		var pending []string
		for _, t := range targets {
			if targetTerminal(t.State) {
				continue
			}
			s := m.cfg.Fleet.Session(t.AgentID)
			if s == nil || m.wasSent(s, c.ID) {
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
			claimed, err := m.cfg.Store.ClaimTargets(ctx, c.ID, chunk, allowed, now)
			if err != nil {
				return err
			}
			for _, a := range claimed {
				if s := m.cfg.Fleet.Session(a); s != nil {
					send(a, s)
				}
				m.publishTarget(ctx, c.ID, a)
			}
		}
	}
	m.adm.refresh(fresh)
	m.forgetClosedSessions()
	return nil
}

// Acked records an agent's answer to a directive. A rejected arm (the agent
// refused the spec, e.g. an older agent) fails that target with the reason.
func (m *Manager) Acked(ctx context.Context, agentID string, ack *livedumpv1.Ack) {
	key := agentID + "/" + ack.GetDirectiveId()
	m.mu.Lock()
	at, ok := m.sentAt[key]
	delete(m.sentAt, key)
	m.mu.Unlock()
	if !ok {
		return // not a capture directive, or sent before a controller restart
	}
	m.metrics.ackSeconds.Observe(time.Since(at).Seconds())
	if ack.GetError() == "" {
		m.metrics.acked.WithLabelValues("ok").Inc()
		return
	}
	m.metrics.acked.WithLabelValues("rejected").Inc()
	if id, ok := strings.CutPrefix(ack.GetDirectiveId(), "arm-"); ok {
		m.Status(ctx, agentID, &livedumpv1.CaptureStatus{CaptureId: id, State: livedumpv1.TargetState_TARGET_STATE_FAILED, Detail: "agent refused the capture: " + ack.GetError()})
	}
}

func (m *Manager) wasSent(s *fleet.Session, id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sent[s][id]
}

func (m *Manager) markSent(s *fleet.Session, id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sent[s] == nil {
		m.sent[s] = map[string]bool{}
	}
	m.sent[s][id] = true
}

func (m *Manager) forgetClosedSessions() {
	m.mu.Lock()
	defer m.mu.Unlock()
	// A walk over every session: the scheduler runs at every kick, so the
	// walk runs at most every 10 s (at 10k agents it was a fifth of the
	// controller's CPU during a fan-out).
	if time.Since(m.forgotAt) < 10*time.Second {
		return
	}
	m.forgotAt = time.Now()
	m.limits.forgetFull(m.cfg.Clock.Now())
	for s := range m.sent {
		if s.Closed() {
			delete(m.sent, s)
		}
	}
	// Directives never acked (the agent went away) are forgotten after a
	// while, so the map cannot grow without bound.
	for k, at := range m.sentAt {
		if time.Since(at) > 10*time.Minute {
			delete(m.sentAt, k)
		}
	}
}

// Status records a target state an agent reported. States go through the
// ingest queue behind the agent's events, so a capture never ends (and its
// watchers never see the end) before its last events are stored, and they
// are written in batches: a fan-out to 10,000 agents is answered by 10,000
// "armed" reports.
func (m *Manager) Status(ctx context.Context, agentID string, st *livedumpv1.CaptureStatus) {
	if targetStateName(st.GetState()) == "" {
		return
	}
	select {
	case m.in <- ingest{agentID: agentID, status: st}:
	case <-ctx.Done():
	}
}

// applyStatuses records a batch of reported states in one transaction.
func (m *Manager) applyStatuses(ctx context.Context, items []ingest) {
	now := m.cfg.Clock.Now().UTC()
	states := map[string]string{} // capture -> state; "" for unknown
	var ups []store.CaptureTarget
	terminal := false
	for _, it := range items {
		st := it.status
		name := targetStateName(st.GetState())
		id := st.GetCaptureId()
		cs, ok := states[id]
		if !ok {
			if c, err := m.cfg.Store.GetCapture(ctx, id); err == nil {
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
	if _, err := m.cfg.Store.SetTargetStates(ctx, ups); err != nil {
		m.log.Warn("record capture statuses", "count", len(ups), "err", err)
		return
	}
	for _, u := range ups {
		m.publishTarget(ctx, u.CaptureID, u.AgentID)
	}
	if terminal {
		m.Kick()
	}
}

func (m *Manager) publishTarget(ctx context.Context, captureID, agentID string) {
	if !m.watched(captureID) {
		return // reading every target per change is only worth it for a watcher
	}
	targets, err := m.cfg.Store.ListTargets(ctx, captureID)
	if err != nil {
		return
	}
	for _, t := range targets {
		if t.AgentID == agentID {
			m.publish(captureID, &livedumpv1.WatchCaptureResponse{Msg: &livedumpv1.WatchCaptureResponse_Target{Target: &livedumpv1.CaptureTarget{
				AgentId: t.AgentID, State: TargetStateValue(t.State), Detail: t.Detail, Events: t.Events, Updated: timestamppb.New(t.Updated),
			}}}, false)
		}
	}
}

// ExpireIn is for tests and the CLI: how long the default expiry is.
func ExpireIn(d *durationpb.Duration) time.Duration {
	if d == nil {
		return DefaultExpire
	}
	return d.AsDuration()
}

// ParseState is the inverse of the stored state names, for filters.
func ParseState(s string) (string, error) {
	switch strings.ToLower(s) {
	case StateActive, StateDone, StateExpired, StateCancelled:
		return strings.ToLower(s), nil
	}
	return "", fmt.Errorf("state %q: want active, done, expired or cancelled", s)
}

func timestampOf(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

// DumpLimits returns a capture's upload limits: --max-dumps for a dump
// capture and --dumps-per-signature. An unknown capture has none.
func (m *Manager) DumpLimits(ctx context.Context, id string) (maxDumps, perSignature int, err error) {
	c, err := m.cfg.Store.GetCapture(ctx, id)
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
