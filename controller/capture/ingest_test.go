package capture

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/time/rate"

	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/store"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// fakeIngestStore keeps events in memory, skipping IDs already stored, and
// knows agents' hostnames. A capture it is asked about is unknown.
type fakeIngestStore struct {
	mu        sync.Mutex
	events    []store.Event
	batches   chan int // the size of each InsertEvents call, when set
	insertErr error
}

func (s *fakeIngestStore) InsertEvents(_ context.Context, evs []store.Event) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.insertErr != nil {
		return 0, s.insertErr
	}
	n := 0
	for _, e := range evs {
		if !slices.ContainsFunc(s.events, func(x store.Event) bool { return x.ID == e.ID }) {
			s.events = append(s.events, e)
			n++
		}
	}
	if s.batches != nil {
		s.batches <- len(evs)
	}
	return n, nil
}

func (s *fakeIngestStore) GetAgent(_ context.Context, id string) (store.Agent, error) {
	return store.Agent{ID: id, Hostname: "HOST-" + id}, nil
}

func (s *fakeIngestStore) GetCapture(context.Context, string) (store.Capture, error) {
	return store.Capture{}, store.ErrNotFound
}

func (s *fakeIngestStore) ListTargets(context.Context, string) ([]store.CaptureTarget, error) {
	return nil, nil
}

// fakeRefuser records refusals.
type fakeRefuser struct{ reasons []string }

func (r *fakeRefuser) refuse(_, _ string, rf *refusal) { r.reasons = append(r.reasons, rf.reason) }

// fakeStatuses records the states handed over with each batch.
type fakeStatuses struct{ got []string }

func (s *fakeStatuses) applyStatuses(_ context.Context, items []ingest) {
	for _, it := range items {
		s.got = append(s.got, it.agentID+" "+it.status.GetCaptureId())
	}
}

type ingestFixture struct {
	t        *testing.T
	st       *fakeIngestStore
	router   *fakeRouter
	watch    *fakeWatchers
	refused  *fakeRefuser
	statuses *fakeStatuses
	kick     wakeup
	g        *ingester
}

// newIngestFixture runs an ingester whose admission knows c-1 (targets a
// and b) and c-2 (target a).
func newIngestFixture(t *testing.T, batchSize int, watched ...string) *ingestFixture {
	f := &ingestFixture{t: t, st: &fakeIngestStore{}, router: newFakeRouter(), watch: newFakeWatchers(watched...),
		refused: &fakeRefuser{}, statuses: &fakeStatuses{}, kick: make(wakeup, 1)}
	adm := newAdmission()
	adm.refresh(map[string]map[string]struct{}{"c-1": {"a": {}, "b": {}}, "c-2": {"a": {}}})
	f.g = newIngester(ingesterConfig{
		store: f.st, clock: newFakeClock(), log: discard(), queue: make(chan ingest, 64), batchSize: batchSize, batchDelay: time.Millisecond,
		eventRate: 1000, eventBurst: 1000, kick: f.kick, admission: adm,
		limits:   &limiters{rate: rate.Limit(1000), burst: 1000, m: map[string]*rate.Limiter{}},
		refusals: f.refused, statuses: f.statuses, watchers: f.watch, peers: f.router, reg: prometheus.NewRegistry(),
	})
	return f
}

// ingestAll queues evs of agentID's session s and flushes them as one batch.
func (f *ingestFixture) ingestAll(s *fleet.Session, agentID string, evs ...*livedumpv1.TriggerEvent) {
	f.t.Helper()
	for _, ev := range evs {
		if err := f.g.Ingest(context.Background(), s, agentID, ev); err != nil {
			f.t.Fatal(err)
		}
	}
	var batch []ingest
	for len(f.g.queue) > 0 {
		batch = append(batch, <-f.g.queue)
	}
	f.g.flush(context.Background(), batch)
}

func acks(s *fleet.Session) (ids []string, refused []string) {
	for {
		select {
		case m := <-s.Outbox():
			ids = append(ids, m.GetEventAck().GetEventIds()...)
			for _, r := range m.GetEventAck().GetRefused() {
				refused = append(refused, r.GetEventId())
			}
		default:
			return ids, refused
		}
	}
}

// TestIngestStoresAcksAndPublishes: a batch is stored in one call, signed,
// acked to the session, given to the watchers of its captures with the
// stored hostname, and announced to the other replicas once per capture.
func TestIngestStoresAcksAndPublishes(t *testing.T) {
	f := newIngestFixture(t, 512, "c-1")
	s := fleet.NewRegistry(nil).Attach("a", t0, func(error) {})
	e1, e2, e3 := event("a", "c-1", 1), event("a", "c-1", 2), event("a", "c-2", 1)
	e1.Hostname = "SPOOFED"
	f.ingestAll(s, "a", e1, e2, e3, event("a", "c-9", 1))

	if len(f.st.events) != 3 || f.st.events[0].Signature == "" {
		t.Fatalf("stored %+v", f.st.events)
	}
	ids, refused := acks(s)
	if len(ids) != 4 || len(refused) != 1 || refused[0] != "ev-c-9-00000001" {
		t.Fatalf("acked %v refused %v", ids, refused)
	}
	if !slices.Equal(f.refused.reasons, []string{RefusedCaptureUnknown}) {
		t.Fatalf("refusals %v", f.refused.reasons)
	}
	if len(f.watch.events) != 2 || f.watch.events[0].GetHostname() != "HOST-a" || f.watch.events[1].GetId() != e2.GetId() {
		t.Fatalf("published %v, want c-1's two events named HOST-a", f.watch.events)
	}
	stored := slices.Clone(f.router.stored)
	slices.Sort(stored)
	if !slices.Equal(stored, []string{"c-1", "c-2"}) {
		t.Fatalf("replicas told of %v", f.router.stored)
	}
	if !kicked(f.kick) {
		t.Fatal("no scheduler pass asked for (max-dumps may be reached)")
	}
	if n := testutil.ToFloat64(f.g.metrics.events); n != 3 {
		t.Fatalf("events_total %v", n)
	}

	// The same events again: acked, counted as duplicates, nothing new.
	f.router.stored = nil
	f.ingestAll(s, "a", event("a", "c-1", 1))
	if ids, _ := acks(s); len(ids) != 1 || len(f.st.events) != 3 || len(f.router.stored) != 0 || kicked(f.kick) {
		t.Fatalf("a duplicate: acked %v, %d stored, told %v", ids, len(f.st.events), f.router.stored)
	}
	if n := testutil.ToFloat64(f.g.metrics.duplicates); n != 1 {
		t.Fatalf("duplicates %v", n)
	}
}

// TestIngestRefusesBeforeQueueing: an event of a capture that does not
// target the agent, or of the wrong shape, is refused and acked, and not
// stored.
func TestIngestRefusesBeforeQueueing(t *testing.T) {
	f := newIngestFixture(t, 512)
	s := fleet.NewRegistry(nil).Attach("b", t0, func(error) {})
	bad := event("b", "c-1", 1)
	bad.AgentId = "a"
	f.ingestAll(s, "b", event("b", "c-2", 1), bad)
	if len(f.st.events) != 0 {
		t.Fatalf("stored %v", f.st.events)
	}
	if _, refused := acks(s); len(refused) != 2 {
		t.Fatalf("refused %v", refused)
	}
	if !slices.Equal(f.refused.reasons, []string{RefusedNotTarget, RefusedInvalid}) {
		t.Fatalf("refusals %v", f.refused.reasons)
	}
}

// TestIngestStoreFailureEndsTheStreams: a batch the store does not take is
// not acked, and its agents reconnect (perhaps to a replica that reaches
// the store) to send it again.
func TestIngestStoreFailureEndsTheStreams(t *testing.T) {
	f := newIngestFixture(t, 512)
	f.st.insertErr = errors.New("disk full")
	var cause error
	s := fleet.NewRegistry(nil).Attach("a", t0, func(err error) { cause = err })
	f.ingestAll(s, "a", event("a", "c-1", 1))
	if ids, _ := acks(s); len(ids) != 0 {
		t.Fatalf("acked %v", ids)
	}
	if !errors.Is(cause, fleet.ErrStoreUnavailable) {
		t.Fatalf("stream ended with %v", cause)
	}
}

// TestIngestStatusesFollowTheirEvents: states reported in a batch are
// handed over after its events are stored.
func TestIngestStatusesFollowTheirEvents(t *testing.T) {
	f := newIngestFixture(t, 512)
	s := fleet.NewRegistry(nil).Attach("a", t0, func(error) {})
	f.g.queue <- ingest{agentID: "a", status: &livedumpv1.CaptureStatus{CaptureId: "c-1", State: livedumpv1.TargetState_TARGET_STATE_DONE}}
	f.ingestAll(s, "a", event("a", "c-1", 1))
	if len(f.st.events) != 1 || !slices.Equal(f.statuses.got, []string{"a c-1"}) {
		t.Fatalf("stored %d, statuses %v", len(f.st.events), f.statuses.got)
	}
}

// TestIngestLoopBatches: the loop stores at most BatchSize events at once.
func TestIngestLoopBatches(t *testing.T) {
	f := newIngestFixture(t, 2)
	f.st.batches = make(chan int, 8)
	s := fleet.NewRegistry(nil).Attach("a", t0, func(error) {})
	for i := range 3 {
		if err := f.g.Ingest(context.Background(), s, "a", event("a", "c-1", i)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.g.loop(ctx) }()
	got := []int{<-f.st.batches, <-f.st.batches}
	cancel()
	<-done
	if !slices.Equal(got, []int{2, 1}) {
		t.Fatalf("batches of %v, want [2 1]", got)
	}
}

// TestIngestBatchKeepsEventsTogether: two agents queueing batches at once
// each get their events into the queue next to each other (so they are
// stored and acked together), each event admitted as if it came alone.
func TestIngestBatchKeepsEventsTogether(t *testing.T) {
	f := newIngestFixture(t, 512)
	f.g.queue = make(chan ingest, 1) // full at once: both senders block
	reg := fleet.NewRegistry(nil)
	sa, sb := reg.Attach("a", t0, func(error) {}), reg.Attach("b", t0, func(error) {})
	var evsA, evsB []*livedumpv1.TriggerEvent
	for i := range 20 {
		evsA = append(evsA, event("a", "c-1", i))
		evsB = append(evsB, event("b", "c-1", 100+i))
	}
	evsB[3].AgentId = "a" // refused on its own, the rest of the batch goes on
	errs := make(chan error, 2)
	go func() { errs <- f.g.IngestBatch(context.Background(), sa, "a", evsA) }()
	go func() { errs <- f.g.IngestBatch(context.Background(), sb, "b", evsB) }()
	var order []string
	for range 40 {
		it := <-f.g.queue
		order = append(order, it.agentID)
		f.g.flush(context.Background(), []ingest{it})
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i < len(order); i++ {
		if order[i] != order[i-1] && i != 20 {
			t.Fatalf("batches interleaved in the queue: %v", order)
		}
	}
	if len(f.st.events) != 39 {
		t.Fatalf("%d events stored, want 39", len(f.st.events))
	}
	if _, refused := acks(sb); len(refused) != 1 || refused[0] != evsB[3].GetId() {
		t.Fatalf("refused %v, want only %s", refused, evsB[3].GetId())
	}
}
