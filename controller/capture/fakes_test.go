package capture

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/livedump/livedump/controller/cluster"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlite"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// Hand-written fakes of the parts' dependencies, shared by the parts' tests.

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// openStore opens a SQLite store in a test directory.
func openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// addAgents stores provisioned agents with hostname HOST-<id> and the
// given labels.
func addAgents(t *testing.T, st store.Store, labels map[string]string, ids ...string) {
	t.Helper()
	for _, id := range ids {
		// Provisioned: a capture on agents that are not is refused unless
		// forced (TestCreateCatchesNothing).
		if err := st.CreateAgent(context.Background(), store.Agent{ID: id, Hostname: "HOST-" + id, Labels: labels, FirstSeen: t0, LastSeen: t0, ProvisionState: "ready"}); err != nil {
			t.Fatal(err)
		}
	}
}

// storeCapture stores an active capture with spec (protojson) and its
// targets in the given states.
func storeCapture(t *testing.T, st store.Store, id, spec string, created time.Time, targets map[string]string) {
	t.Helper()
	var ts []store.CaptureTarget
	for a, s := range targets {
		ts = append(ts, store.CaptureTarget{AgentID: a, State: s, Updated: created})
	}
	if err := st.CreateCapture(context.Background(), store.Capture{ID: id, Spec: spec, State: StateActive, Created: created,
		Expires: created.Add(time.Hour), Statuses: "[]"}, ts); err != nil {
		t.Fatal(err)
	}
}

// fakeRouter records what the manager sends through the cluster.
type fakeRouter struct {
	mu      sync.Mutex
	sent    map[string][]*livedumpv1.Directive // by agent
	changed []string
	stored  []string
	notices chan cluster.CaptureNotice
	sendErr error
	offline map[string]bool // agents no replica holds; every other one is online
}

func newFakeRouter() *fakeRouter {
	return &fakeRouter{sent: map[string][]*livedumpv1.Directive{}, notices: make(chan cluster.CaptureNotice, 16)}
}

func (r *fakeRouter) Send(_ context.Context, agentID string, d *livedumpv1.Directive) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sendErr != nil {
		return r.sendErr
	}
	r.sent[agentID] = append(r.sent[agentID], d)
	return nil
}

func (r *fakeRouter) CaptureChanged(_ context.Context, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changed = append(r.changed, id)
}

func (r *fakeRouter) EventsStored(_ context.Context, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stored = append(r.stored, id)
}

func (r *fakeRouter) SubscribeCaptures() <-chan cluster.CaptureNotice { return r.notices }

func (r *fakeRouter) Online(_ context.Context, agentID string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.offline[agentID]
}

// fakeWatchers stands for the watch hub: it says which captures are
// watched and records what it is given.
type fakeWatchers struct {
	mu       sync.Mutex
	watching map[string]bool
	relayed  []string
	targets  []string // capture/agent
	events   []*livedumpv1.TriggerEvent
	ended    []string
}

func newFakeWatchers(watched ...string) *fakeWatchers {
	w := &fakeWatchers{watching: map[string]bool{}}
	for _, id := range watched {
		w.watching[id] = true
	}
	return w
}

func (w *fakeWatchers) watched(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.watching[id]
}

func (w *fakeWatchers) relay(_ context.Context, id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.relayed = append(w.relayed, id)
}

func (w *fakeWatchers) publishTarget(_ context.Context, captureID, agentID string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.targets = append(w.targets, captureID+"/"+agentID)
}

func (w *fakeWatchers) publishEvent(ev *livedumpv1.TriggerEvent) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.events = append(w.events, ev)
}

func (w *fakeWatchers) publishEnded(_ context.Context, id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ended = append(w.ended, id)
}

// fakeAdmission records what the lifecycle and the rollout tell admission.
type fakeAdmission struct {
	forgotten []string
	active    map[string]map[string]struct{}
}

func (a *fakeAdmission) ended(id string)                               { a.forgotten = append(a.forgotten, id) }
func (a *fakeAdmission) refresh(active map[string]map[string]struct{}) { a.active = active }

func newFakeClock() *clockwork.FakeClock { return clockwork.NewFakeClockAt(t0) }

// kicked reports whether a scheduler pass was asked for, and takes the
// request.
func kicked(w wakeup) bool {
	select {
	case <-w:
		return true
	default:
		return false
	}
}

func directiveIDs(ds []*livedumpv1.Directive) (ids []string) {
	for _, d := range ds {
		ids = append(ids, d.GetId())
	}
	return ids
}
