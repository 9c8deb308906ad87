package capture

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/livedump/livedump/controller/cluster"
	"github.com/livedump/livedump/controller/store"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// relayWindow is how far back a relay re-reads: with several replicas,
// events can commit out of sequence order.
const relayWindow = 512

// maxRelaySeen bounds the IDs remembered per watched capture.
const maxRelaySeen = 100000

// watchHub feeds live watchers of captures: the events and target changes
// stored here, the events other replicas stored (read back from the store:
// the relay), and each capture's final state. It also follows the notices
// other replicas send about captures.
type watchHub struct {
	store  watchStore
	log    *slog.Logger
	kick   wakeup
	online presence // for the final state's offline count; nil: none

	mu       sync.Mutex
	watchers map[string]map[chan *livedumpv1.WatchCaptureResponse]struct{}
	relays   map[string]*relayState
}

// watchStore is what the hub reads.
type watchStore interface {
	captureReader
	ListEvents(ctx context.Context, captureID string, afterSeq int64, limit int) ([]store.Event, error)
}

// relayState is what the watchers of one capture have been given, and the
// hostnames of its agents read so far.
type relayState struct {
	after int64
	seen  map[string]struct{}
	hosts map[string]string // agent ID -> hostname; "" when unknown
}

func newWatchHub(st watchStore, log *slog.Logger, kick wakeup) *watchHub {
	return &watchHub{
		store: st, log: log, kick: kick,
		watchers: map[string]map[chan *livedumpv1.WatchCaptureResponse]struct{}{},
		relays:   map[string]*relayState{},
	}
}

// Watch subscribes to a capture's events and target changes. The channel is
// closed when the capture ends (after the final message) or when the
// watcher falls too far behind; stop unsubscribes.
func (w *watchHub) Watch(id string) (<-chan *livedumpv1.WatchCaptureResponse, func()) {
	ch := make(chan *livedumpv1.WatchCaptureResponse, 1024)
	w.mu.Lock()
	if w.watchers[id] == nil {
		w.watchers[id] = map[chan *livedumpv1.WatchCaptureResponse]struct{}{}
	}
	w.watchers[id][ch] = struct{}{}
	if w.relays[id] == nil {
		w.relays[id] = &relayState{seen: map[string]struct{}{}, hosts: map[string]string{}}
	}
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if _, ok := w.watchers[id][ch]; ok {
			delete(w.watchers[id], ch)
			close(ch)
		}
		if len(w.watchers[id]) == 0 {
			delete(w.watchers, id)
			delete(w.relays, id)
		}
	}
}

func (w *watchHub) watched(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.watchers[id]) > 0
}

func (w *watchHub) publish(id string, msg *livedumpv1.WatchCaptureResponse, final bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.watchers[id] {
		select {
		case ch <- msg:
		default:
			// A watcher that cannot keep up is dropped rather than
			// allowed to hold memory without bound.
			delete(w.watchers[id], ch)
			close(ch)
			continue
		}
		if final {
			delete(w.watchers[id], ch)
			close(ch)
		}
	}
}

// publishEvent gives an event to local watchers, once.
func (w *watchHub) publishEvent(ev *livedumpv1.TriggerEvent) {
	id := ev.GetCaptureId()
	w.mu.Lock()
	st := w.relays[id]
	if st != nil {
		if _, dup := st.seen[ev.GetId()]; dup {
			w.mu.Unlock()
			return
		}
		st.seen[ev.GetId()] = struct{}{}
	}
	w.mu.Unlock()
	w.publish(id, &livedumpv1.WatchCaptureResponse{Msg: &livedumpv1.WatchCaptureResponse_Event{Event: ev}}, false)
}

func (w *watchHub) publishTarget(ctx context.Context, captureID, agentID string) {
	if !w.watched(captureID) {
		return // reading every target per change is only worth it for a watcher
	}
	targets, err := w.store.ListTargets(ctx, captureID)
	if err != nil {
		return
	}
	for _, t := range targets {
		if t.AgentID == agentID {
			w.publish(captureID, &livedumpv1.WatchCaptureResponse{Msg: &livedumpv1.WatchCaptureResponse_Target{
				Target: targetProto(t, w.hostname(ctx, captureID, agentID)),
			}}, false)
		}
	}
}

// hostname is the agent's hostname as the controller stores it, read once
// per watched capture, so every line a watcher prints names the machine the
// same way: replayed targets and events carry hostnames, and so do live ones.
func (w *watchHub) hostname(ctx context.Context, captureID, agentID string) string {
	w.mu.Lock()
	st := w.relays[captureID]
	if st != nil {
		if h, ok := st.hosts[agentID]; ok {
			w.mu.Unlock()
			return h
		}
	}
	w.mu.Unlock()
	a, err := w.store.GetAgent(ctx, agentID)
	if err != nil {
		return "" // not remembered: the next change reads it again
	}
	w.mu.Lock()
	if cur := w.relays[captureID]; cur != nil {
		cur.hosts[agentID] = a.Hostname
	}
	w.mu.Unlock()
	return a.Hostname
}

// publishEnded gives local watchers the capture's final state.
func (w *watchHub) publishEnded(ctx context.Context, id string) {
	if !w.watched(id) {
		return
	}
	// Events another replica stored whose notification never came are
	// read now, so the watcher has them all before the end.
	w.relay(ctx, id)
	if p, err := loadCapture(ctx, w.store, w.online, id); err == nil {
		p = Trim(p, MessageBudget) // one message: the targets are on GetCapture's pages
		w.publish(id, &livedumpv1.WatchCaptureResponse{Msg: &livedumpv1.WatchCaptureResponse_Ended{Ended: p}}, true)
	}
}

// Remote is called when a replica created or ended a capture: the
// scheduler runs now, and local watchers of an ended capture are told.
func (w *watchHub) Remote(captureID string) {
	w.kick.Kick()
	if !w.watched(captureID) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, err := w.store.GetCapture(ctx, captureID); err == nil && c.State != StateActive {
		w.publishEnded(ctx, captureID)
	}
}

// Relay gives local watchers the events another replica stored.
func (w *watchHub) Relay(captureID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w.relay(ctx, captureID)
}

func (w *watchHub) relay(ctx context.Context, captureID string) {
	w.mu.Lock()
	st := w.relays[captureID]
	after := int64(0)
	if st != nil {
		after = max(0, st.after-relayWindow)
	}
	w.mu.Unlock()
	if st == nil {
		return
	}
	for range 100 {
		rows, err := w.store.ListEvents(ctx, captureID, after, 1000)
		if err != nil {
			w.log.Warn("relay events", "capture_id", captureID, "err", err)
			return
		}
		for _, r := range rows {
			after = r.Seq
			w.publishEvent(eventProto(r, w.hostname(ctx, captureID, r.AgentID)))
		}
		w.mu.Lock()
		if cur := w.relays[captureID]; cur != nil {
			cur.after = max(cur.after, after)
			if len(cur.seen) > maxRelaySeen {
				cur.seen = map[string]struct{}{}
			}
		}
		w.mu.Unlock()
		if len(rows) < 1000 {
			return
		}
	}
}

// follow acts on the replicas' notices about captures until ctx ends: a
// capture created or ended (Remote), new events stored elsewhere (Relay).
// A nil channel (a single controller) has none.
func (w *watchHub) follow(ctx context.Context, notices <-chan cluster.CaptureNotice) {
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-notices:
			if n.Events {
				w.Relay(n.CaptureID)
			} else {
				w.Remote(n.CaptureID)
			}
		}
	}
}
