package capture

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/livedump/livedump/controller/cluster"
	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/store"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

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
	// Router reaches agents attached to other replicas, tells them about
	// captures and brings their news; nil: this process is the only
	// controller.
	Router Router
	// EventRate and EventBurst bound the events one agent may send, per
	// second and at once (default DefaultEventRate, DefaultEventBurst); the
	// excess is refused.
	EventRate  float64
	EventBurst int
}

// Router is what the manager needs from the cluster of replicas. The
// dependency goes one way: the manager asks the cluster and reads its
// notices; the cluster knows nothing of captures.
type Router interface {
	// Send delivers a directive that needs no report to the agent,
	// wherever its stream is.
	Send(ctx context.Context, agentID string, d *livedumpv1.Directive) error
	// CaptureChanged tells the other replicas a capture was created or ended.
	CaptureChanged(ctx context.Context, captureID string)
	// EventsStored tells the other replicas a capture has new events.
	EventsStored(ctx context.Context, captureID string)
	// SubscribeCaptures returns the notices replicas send about captures,
	// which Run reads until it returns.
	SubscribeCaptures() <-chan cluster.CaptureNotice
	// Online reports whether the agent's stream is attached to this
	// replica or to another live one.
	Online(ctx context.Context, agentID string) bool
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
func (r localRouter) Online(_ context.Context, agentID string) bool {
	return r.fleet != nil && r.fleet.Online(agentID)
}
func (localRouter) CaptureChanged(context.Context, string)          {}
func (localRouter) EventsStored(context.Context, string)            {}
func (localRouter) SubscribeCaptures() <-chan cluster.CaptureNotice { return nil }

// Manager runs captures on the controller. It is the composition of parts
// with one job each:
//
//   - lifecycle (capture.go, state.go, paging.go): create, read, cancel
//     and end captures;
//   - rollout (rollout.go): arm targets at the rollout rate, expire
//     captures, enforce their limits, record acks and reported states;
//   - ingester (ingest.go, signature.go): queue, batch, store and ack
//     trigger events;
//   - admission and refusals (admission.go, refusals.go): which events are
//     taken, and the record of those that are not;
//   - watchHub (watch.go): live watchers, the relay of events other
//     replicas stored, and the news from other replicas;
//   - eventPages (events.go): stored events a page at a time.
type Manager struct {
	log   *slog.Logger
	clock clockwork.Clock
	tick  time.Duration
	kick  wakeup

	lifecycle *lifecycle
	rollout   *rollout
	ingester  *ingester
	refusals  *refusalLog
	watch     *watchHub
	events    *eventPages
	notices   <-chan cluster.CaptureNotice
}

// ingest is one entry of the ingest queue: an event, or a reported target
// state that is applied after the events queued before it.
type ingest struct {
	agentID string
	ev      *livedumpv1.TriggerEvent
	sess    *fleet.Session
	status  *livedumpv1.CaptureStatus // a final target state, applied after the events before it
	refused *refusal                  // refused before it was queued; ev holds only the IDs
}

// wakeup asks the scheduler to run now. It never blocks: a request already
// waiting covers a new one.
type wakeup chan struct{}

// Kick asks for a scheduler pass.
func (w wakeup) Kick() {
	select {
	case w <- struct{}{}:
	default:
	}
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
		// Reached only when events queue faster than the delay drains
		// them; then a larger transaction stores each event for less
		// (random event IDs share more index pages per commit).
		cfg.BatchSize = 2048
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
	kick := make(wakeup, 1)
	queue := make(chan ingest, 4096)
	adm := newAdmission()
	limits := &limiters{rate: rate.Limit(cfg.EventRate), burst: cfg.EventBurst, m: map[string]*rate.Limiter{}}
	watch := newWatchHub(cfg.Store, cfg.Logger, kick)
	watch.online = cfg.Router
	life := &lifecycle{store: cfg.Store, router: cfg.Router, online: cfg.Router, clock: cfg.Clock, log: cfg.Logger, kick: kick, admission: adm, watchers: watch}
	roll := newRollout(rolloutConfig{
		store: cfg.Store, sessions: cfg.Fleet, clock: cfg.Clock, log: cfg.Logger, queue: queue, kick: kick,
		ender: life, watchers: watch, admission: adm, limits: limits, reg: cfg.Metrics,
	})
	life.handOff = roll.handOff
	refusals := newRefusalLog(cfg.Store, cfg.Clock, cfg.Logger, cfg.Metrics)
	ing := newIngester(ingesterConfig{
		store: cfg.Store, clock: cfg.Clock, log: cfg.Logger, queue: queue, batchSize: cfg.BatchSize, batchDelay: cfg.BatchDelay,
		eventRate: cfg.EventRate, eventBurst: cfg.EventBurst, kick: kick, admission: adm, limits: limits, refusals: refusals,
		statuses: roll, watchers: watch, peers: cfg.Router, reg: cfg.Metrics,
	})
	return &Manager{
		log: cfg.Logger, clock: cfg.Clock, tick: cfg.Tick, kick: kick,
		lifecycle: life, rollout: roll, ingester: ing, refusals: refusals, watch: watch,
		events:  &eventPages{store: cfg.Store},
		notices: cfg.Router.SubscribeCaptures(),
	}
}

// Run schedules deliveries, ingests events and follows the other replicas'
// notices until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { m.ingester.loop(ctx) })
	wg.Go(func() { m.watch.follow(ctx, m.notices) })
	t := m.clock.NewTicker(m.tick)
	defer t.Stop()
	for {
		if err := m.rollout.schedule(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("capture scheduler", "err", err)
		}
		m.refusals.flush(false)
		select {
		case <-ctx.Done():
			wg.Wait()
			m.refusals.flush(true)
			return nil
		case <-t.Chan():
		case <-m.kick:
		}
	}
}

// Kick asks the scheduler to run now, e.g. when an agent connects.
func (m *Manager) Kick() { m.kick.Kick() }

// Create validates spec, resolves its statuses, renders its probe, picks
// the targets and stores everything, returning the capture and its
// preview; nothing is stored for a rejected spec, for a capture that can
// catch nothing (unless forced; *CatchesNothingError), or for a dry run
// (which returns the preview alone).
func (m *Manager) Create(ctx context.Context, r Request) (*livedumpv1.Capture, *livedumpv1.CapturePreview, error) {
	return m.lifecycle.Create(ctx, r)
}

// Get returns a capture with its targets.
func (m *Manager) Get(ctx context.Context, id string) (*livedumpv1.Capture, error) {
	return m.lifecycle.Get(ctx, id)
}

// List returns every capture, newest first, without targets' hostnames.
func (m *Manager) List(ctx context.Context) ([]*livedumpv1.Capture, error) {
	return m.lifecycle.List(ctx)
}

// Cancel ends a capture and disarms every target.
func (m *Manager) Cancel(ctx context.Context, id, actor string) (*livedumpv1.Capture, error) {
	return m.lifecycle.Cancel(ctx, id, actor)
}

// GetPage returns a capture with the page of its targets (by agent ID) that
// follows the agent ID after and fits in budget encoded bytes, at least one
// target when any follows. OmittedTargets counts the targets on other
// pages; next is the agent ID to read on from, empty after the last page.
func (m *Manager) GetPage(ctx context.Context, id, after string, budget int) (*livedumpv1.Capture, string, error) {
	return m.lifecycle.GetPage(ctx, id, after, budget)
}

// ListPage returns captures newest first (then by ID) that come after the
// capture (afterCreated, afterID) when afterID is set, as many as fit in
// budget encoded bytes and at least one. A capture larger than the budget
// by itself is trimmed (see Trim). more reports whether a capture follows.
func (m *Manager) ListPage(ctx context.Context, afterCreated time.Time, afterID string, budget int) ([]*livedumpv1.Capture, bool, error) {
	return m.lifecycle.ListPage(ctx, afterCreated, afterID, budget)
}

// Acked records an agent's answer to a directive. A rejected arm (the agent
// refused the spec, e.g. an older agent) fails that target with the reason.
func (m *Manager) Acked(ctx context.Context, agentID string, ack *livedumpv1.Ack) {
	m.rollout.Acked(ctx, agentID, ack)
}

// Status records a target state an agent reported. States go through the
// ingest queue behind the agent's events, so a capture never ends (and its
// watchers never see the end) before its last events are stored.
func (m *Manager) Status(ctx context.Context, agentID string, st *livedumpv1.CaptureStatus) {
	m.rollout.Status(ctx, agentID, st)
}

// DumpLimits returns a capture's upload limits: --max-dumps for a dump
// capture and --dumps-per-signature. An unknown capture has none.
func (m *Manager) DumpLimits(ctx context.Context, id string) (maxDumps, perSignature int, err error) {
	return m.rollout.DumpLimits(ctx, id)
}

// Ingest queues an event from an agent's stream. It blocks when the queue is
// full, which slows that agent's stream down instead of buffering without
// bound. An event over the agent's rate or over the size limits is refused
// here, so only its IDs are queued, for the acknowledgement.
func (m *Manager) Ingest(ctx context.Context, s *fleet.Session, agentID string, ev *livedumpv1.TriggerEvent) error {
	return m.ingester.Ingest(ctx, s, agentID, ev)
}

// IngestBatch queues the events of one EventBatch message, each as Ingest
// would, next to each other in the queue.
func (m *Manager) IngestBatch(ctx context.Context, s *fleet.Session, agentID string, evs []*livedumpv1.TriggerEvent) error {
	return m.ingester.IngestBatch(ctx, s, agentID, evs)
}

// Watch subscribes to a capture's events and target changes. The channel is
// closed when the capture ends (after the final message) or when the
// watcher falls too far behind; stop unsubscribes.
func (m *Manager) Watch(id string) (<-chan *livedumpv1.WatchCaptureResponse, func()) {
	return m.watch.Watch(id)
}

// Relay gives local watchers the events another replica stored.
func (m *Manager) Relay(captureID string) { m.watch.Relay(captureID) }

// Remote is called when another replica created or ended a capture: the
// scheduler runs now, and local watchers of an ended capture are told.
func (m *Manager) Remote(captureID string) { m.watch.Remote(captureID) }

// Events returns a capture's events after the event with ID after.
func (m *Manager) Events(ctx context.Context, captureID, after string, limit int) ([]*livedumpv1.TriggerEvent, error) {
	return m.events.Events(ctx, captureID, after, limit)
}

// EventsPage returns up to limit of a capture's events after the event with
// ID after, and at most budget encoded bytes of them (0: no budget; one
// event is always returned, and none exceeds MaxEventBytes by much). next is
// the ID to read on from, empty when no event follows.
func (m *Manager) EventsPage(ctx context.Context, captureID, after string, limit, budget int) (evs []*livedumpv1.TriggerEvent, next string, err error) {
	return m.events.EventsPage(ctx, captureID, after, limit, budget)
}
