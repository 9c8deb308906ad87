package capture

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/livedump/livedump/controller/cluster"
	"github.com/livedump/livedump/controller/store"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// fakeWatchStore holds what another replica stored: events in sequence,
// captures and their targets. Agents are named HOST-<id>.
type fakeWatchStore struct {
	mu       sync.Mutex
	events   []store.Event
	captures map[string]store.Capture
	targets  map[string][]store.CaptureTarget
}

func newFakeWatchStore() *fakeWatchStore {
	return &fakeWatchStore{captures: map[string]store.Capture{}, targets: map[string][]store.CaptureTarget{}}
}

// add stores n events of captureID from agent a, as another replica does.
func (s *fakeWatchStore) add(captureID string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		seq := int64(len(s.events) + 1)
		s.events = append(s.events, store.Event{Seq: seq, ID: fmt.Sprintf("ev-%06d", seq), CaptureID: captureID, AgentID: "a", Time: t0, User: "[]", Kernel: "[]"})
	}
}

func (s *fakeWatchStore) ListEvents(_ context.Context, captureID string, after int64, limit int) ([]store.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []store.Event
	for _, e := range s.events {
		if e.CaptureID == captureID && e.Seq > after && len(out) < limit {
			out = append(out, e)
		}
	}
	return out, nil
}

func (s *fakeWatchStore) GetCapture(_ context.Context, id string) (store.Capture, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.captures[id]
	if !ok {
		return c, store.ErrNotFound
	}
	return c, nil
}

func (s *fakeWatchStore) ListTargets(_ context.Context, id string) ([]store.CaptureTarget, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.targets[id], nil
}

func (s *fakeWatchStore) GetAgent(_ context.Context, id string) (store.Agent, error) {
	return store.Agent{ID: id, Hostname: "HOST-" + id}, nil
}

func (s *fakeWatchStore) ListAgentsPage(context.Context, string, string, int) ([]store.Agent, error) {
	return nil, nil
}

func (s *fakeWatchStore) setCapture(id, state string, targets ...store.CaptureTarget) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.captures[id] = store.Capture{ID: id, Spec: `{"selector":"x"}`, State: state, Created: t0, Expires: t0, Statuses: "[]"}
	s.targets[id] = targets
}

// received returns what waits on ch, and whether ch was closed.
func received(ch <-chan *livedumpv1.WatchCaptureResponse) (msgs []*livedumpv1.WatchCaptureResponse, closed bool) {
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				return msgs, true
			}
			msgs = append(msgs, m)
		default:
			return msgs, false
		}
	}
}

func eventIDs(msgs []*livedumpv1.WatchCaptureResponse) (ids []string) {
	for _, m := range msgs {
		if e := m.GetEvent(); e != nil {
			ids = append(ids, e.GetId())
		}
	}
	return ids
}

// TestWatchPublishesOnceAndUnsubscribes: every watcher of a capture gets
// its events once each; stop closes the channel and frees the capture's
// state.
func TestWatchPublishesOnceAndUnsubscribes(t *testing.T) {
	w := newWatchHub(newFakeWatchStore(), discard(), make(wakeup, 1))
	ch1, stop1 := w.Watch("c-1")
	ch2, stop2 := w.Watch("c-1")
	other, stopOther := w.Watch("c-2")
	defer stopOther()
	ev := &livedumpv1.TriggerEvent{Id: "ev-000001", CaptureId: "c-1"}
	w.publishEvent(ev)
	w.publishEvent(ev)
	for i, ch := range []<-chan *livedumpv1.WatchCaptureResponse{ch1, ch2} {
		if msgs, _ := received(ch); !slices.Equal(eventIDs(msgs), []string{"ev-000001"}) {
			t.Errorf("watcher %d got %v", i, msgs)
		}
	}
	if msgs, _ := received(other); len(msgs) != 0 {
		t.Errorf("a watcher of another capture got %v", msgs)
	}

	stop1()
	stop1() // twice is harmless
	if _, closed := received(ch1); !closed {
		t.Fatal("stop did not close the channel")
	}
	if !w.watched("c-1") {
		t.Fatal("c-1 unwatched while a watcher remains")
	}
	stop2()
	w.mu.Lock()
	left := len(w.watchers["c-1"]) + len(w.relays)
	w.mu.Unlock()
	if w.watched("c-1") || left != 1 { // c-2's relay state remains
		t.Fatalf("after the last stop: watched %v, %d entries left", w.watched("c-1"), left)
	}
}

// TestWatchDropsASlowWatcher: a watcher whose buffer is full is closed
// rather than allowed to hold memory without bound.
func TestWatchDropsASlowWatcher(t *testing.T) {
	w := newWatchHub(newFakeWatchStore(), discard(), make(wakeup, 1))
	ch, stop := w.Watch("c-1")
	defer stop()
	for i := range cap(ch) + 1 {
		w.publishEvent(&livedumpv1.TriggerEvent{Id: fmt.Sprintf("ev-%06d", i), CaptureId: "c-1"})
	}
	msgs, closed := received(ch)
	if !closed || len(msgs) != cap(ch) {
		t.Fatalf("closed %v after %d messages", closed, len(msgs))
	}
	if w.watched("c-1") {
		t.Fatal("the dropped watcher is still subscribed")
	}
}

// TestRelayGivesOtherReplicasEvents: events another replica stored reach
// local watchers with their hostnames, each once however often the relay
// runs, and not again when they were published here first.
func TestRelayGivesOtherReplicasEvents(t *testing.T) {
	st := newFakeWatchStore()
	w := newWatchHub(st, discard(), make(wakeup, 1))
	w.Relay("c-1") // nobody watches: nothing read
	ch, stop := w.Watch("c-1")
	defer stop()
	st.add("c-1", 3)
	st.add("c-2", 1)
	w.publishEvent(eventProto(st.events[0], "HOST-a")) // stored and published here
	w.Relay("c-1")
	w.Relay("c-1")
	st.add("c-1", 1)
	w.Relay("c-1")
	msgs, _ := received(ch)
	if got := eventIDs(msgs); !slices.Equal(got, []string{"ev-000001", "ev-000002", "ev-000003", "ev-000005"}) {
		t.Fatalf("watcher got %v", got)
	}
	if h := msgs[1].GetEvent().GetHostname(); h != "HOST-a" {
		t.Fatalf("relayed hostname %q", h)
	}
}

// TestPublishEndedIsFinal: the watchers of an ended capture get the events
// not relayed yet, then its final state, and their channels close.
func TestPublishEndedIsFinal(t *testing.T) {
	st := newFakeWatchStore()
	st.setCapture("c-1", StateCancelled, store.CaptureTarget{CaptureID: "c-1", AgentID: "a", State: TargetCancelled, Updated: t0})
	w := newWatchHub(st, discard(), make(wakeup, 1))
	ch, stop := w.Watch("c-1")
	defer stop()
	st.add("c-1", 1)
	w.publishEnded(context.Background(), "c-1")
	msgs, closed := received(ch)
	if !closed || len(msgs) != 2 || msgs[0].GetEvent() == nil {
		t.Fatalf("closed %v, messages %v", closed, msgs)
	}
	end := msgs[1].GetEnded()
	if end.GetState() != livedumpv1.CaptureState_CAPTURE_STATE_CANCELLED || len(end.GetTargets()) != 1 || end.GetTargets()[0].GetHostname() != "HOST-a" {
		t.Fatalf("ended message %v", end)
	}
}

// TestPublishTarget: a watcher is told a target's stored state.
func TestPublishTarget(t *testing.T) {
	st := newFakeWatchStore()
	st.setCapture("c-1", StateActive, store.CaptureTarget{CaptureID: "c-1", AgentID: "a", State: TargetArmed, Events: 2, Updated: t0},
		store.CaptureTarget{CaptureID: "c-1", AgentID: "b", State: TargetPending, Updated: t0})
	w := newWatchHub(st, discard(), make(wakeup, 1))
	ch, stop := w.Watch("c-1")
	defer stop()
	w.publishTarget(context.Background(), "c-1", "a")
	msgs, _ := received(ch)
	if len(msgs) != 1 || msgs[0].GetTarget().GetAgentId() != "a" || msgs[0].GetTarget().GetState() != livedumpv1.TargetState_TARGET_STATE_ARMED || msgs[0].GetTarget().GetEvents() != 2 {
		t.Fatalf("messages %v", msgs)
	}
	// Live target changes name the machine, as the replayed ones do.
	if h := msgs[0].GetTarget().GetHostname(); h != "HOST-a" {
		t.Fatalf("live target hostname %q, want HOST-a", h)
	}
}

// TestWatchHostnamesAreReadOncePerCapture: the hub remembers the hostnames
// of a watched capture's agents for its target changes and relayed events,
// and forgets them when the last watcher leaves.
func TestWatchHostnamesAreReadOncePerCapture(t *testing.T) {
	st := &countingAgents{fakeWatchStore: newFakeWatchStore()}
	st.setCapture("c-1", StateActive, store.CaptureTarget{CaptureID: "c-1", AgentID: "a", State: TargetArmed, Updated: t0})
	st.add("c-1", 3)
	w := newWatchHub(st, discard(), make(wakeup, 1))
	ch, stop := w.Watch("c-1")
	w.publishTarget(context.Background(), "c-1", "a")
	w.Relay("c-1")
	msgs, _ := received(ch)
	if len(msgs) != 4 {
		t.Fatalf("%d messages, want a target and 3 events", len(msgs))
	}
	for _, m := range msgs {
		h := m.GetTarget().GetHostname() + m.GetEvent().GetHostname()
		if h != "HOST-a" {
			t.Errorf("message %v names %q, want HOST-a", m, h)
		}
	}
	if n := st.reads.Load(); n != 1 {
		t.Errorf("agent read %d times, want once", n)
	}
	stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.relays) != 0 {
		t.Errorf("relay state kept after the last watcher left: %v", w.relays)
	}
}

// countingAgents counts the agents read.
type countingAgents struct {
	*fakeWatchStore
	reads atomic.Int64
}

func (s *countingAgents) GetAgent(ctx context.Context, id string) (store.Agent, error) {
	s.reads.Add(1)
	return s.fakeWatchStore.GetAgent(ctx, id)
}

// TestPublishEndedCountsOffline: the final message counts targets by state
// and the offline ones.
func TestPublishEndedCountsOffline(t *testing.T) {
	st := newFakeWatchStore()
	st.setCapture("c-1", StateFailed, store.CaptureTarget{CaptureID: "c-1", AgentID: "a", State: TargetFailed, Updated: t0},
		store.CaptureTarget{CaptureID: "c-1", AgentID: "b", State: TargetFailed, Updated: t0})
	w := newWatchHub(st, discard(), make(wakeup, 1))
	r := newFakeRouter()
	r.offline = map[string]bool{"b": true}
	w.online = r
	ch, stop := w.Watch("c-1")
	defer stop()
	w.publishEnded(context.Background(), "c-1")
	msgs, closed := received(ch)
	if !closed || len(msgs) != 1 {
		t.Fatalf("%d messages, closed %v", len(msgs), closed)
	}
	end := msgs[0].GetEnded()
	if end.GetState() != livedumpv1.CaptureState_CAPTURE_STATE_FAILED || end.GetTargetCounts()[TargetFailed] != 2 || end.GetOfflineTargets() != 0 {
		t.Fatalf("ended %v: want failed, 2 failed targets, none offline (failed targets are not waiting)", end)
	}
}

// TestFollowActsOnNotices: a notice that a capture changed asks for a
// scheduler pass and ends the watchers of an ended capture; one that
// events were stored elsewhere relays them; the loop ends with ctx.
func TestFollowActsOnNotices(t *testing.T) {
	st := newFakeWatchStore()
	st.setCapture("c-live", StateActive)
	st.setCapture("c-ended", StateExpired)
	kick := make(wakeup, 1)
	w := newWatchHub(st, discard(), kick)
	live, stopLive := w.Watch("c-live")
	defer stopLive()
	ended, stopEnded := w.Watch("c-ended")
	defer stopEnded()
	st.add("c-live", 2)

	notices := make(chan cluster.CaptureNotice)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.follow(ctx, notices) }()
	notices <- cluster.CaptureNotice{CaptureID: "c-live", Events: true}
	notices <- cluster.CaptureNotice{CaptureID: "c-live"}
	notices <- cluster.CaptureNotice{CaptureID: "c-ended"}
	notices <- cluster.CaptureNotice{} // the listener reconnected
	cancel()
	<-done

	if msgs, closed := received(live); closed || !slices.Equal(eventIDs(msgs), []string{"ev-000001", "ev-000002"}) {
		t.Fatalf("watcher of the live capture: closed %v, %v", closed, msgs)
	}
	if msgs, closed := received(ended); !closed || len(msgs) != 1 || msgs[0].GetEnded() == nil {
		t.Fatalf("watcher of the ended capture: closed %v, %v", closed, msgs)
	}
	if !kicked(kick) {
		t.Fatal("no scheduler pass asked for")
	}
}
