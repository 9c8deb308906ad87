package capture

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livedump/livedump/controller/cluster"
	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/store"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// next waits for the next message on ch; the timeout only bounds a broken
// test.
func next(t *testing.T, ch <-chan *livedumpv1.WatchCaptureResponse) *livedumpv1.WatchCaptureResponse {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no watch message")
		return nil
	}
}

// TestManagerComposition runs the composed manager against a fake router:
// the cluster's notices reach the watchers (events another replica stored
// are relayed; a capture it ended is ended here), and an expiry found by
// the scheduler disarms the targets, tells the replicas and ends the
// watch with the final state.
func TestManagerComposition(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	addAgents(t, st, nil, "a")
	clock := newFakeClock()
	router := newFakeRouter()
	reg := fleet.NewRegistry(nil)
	m := New(Config{Store: st, Fleet: reg, Router: router, Clock: clock, Logger: discard(), Metrics: prometheus.NewRegistry()})
	storeCapture(t, st, "c-other", `{"selector":"x"}`, t0, map[string]string{"a": TargetArmed})
	storeCapture(t, st, "c-here", `{"selector":"x"}`, t0, map[string]string{"a": TargetArmed})
	other, stopOther := m.Watch("c-other")
	defer stopOther()
	here, stopHere := m.Watch("c-here")
	defer stopHere()

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	defer func() { cancel(); <-done }()

	// Another replica stores an event and says so, then ends its capture.
	if _, err := st.InsertEvents(ctx, []store.Event{{ID: "ev-000001", CaptureID: "c-other", AgentID: "a", Time: t0, User: "[]", Kernel: "[]"}}); err != nil {
		t.Fatal(err)
	}
	router.notices <- cluster.CaptureNotice{CaptureID: "c-other", Events: true}
	if e := next(t, other).GetEvent(); e.GetId() != "ev-000001" || e.GetHostname() != "HOST-a" {
		t.Fatalf("relayed %v", e)
	}
	if _, err := st.FinishCapture(ctx, "c-other", StateCancelled, "cancelled by op"); err != nil {
		t.Fatal(err)
	}
	router.notices <- cluster.CaptureNotice{CaptureID: "c-other"}
	if end := next(t, other).GetEnded(); end.GetState() != livedumpv1.CaptureState_CAPTURE_STATE_CANCELLED {
		t.Fatalf("ended %v", end)
	}

	// c-here expires: the scheduler ends it.
	clock.Advance(2 * time.Hour)
	m.Kick()
	end := next(t, here).GetEnded()
	if end.GetState() != livedumpv1.CaptureState_CAPTURE_STATE_EXPIRED {
		t.Fatalf("ended %v", end)
	}
	router.mu.Lock()
	defer router.mu.Unlock()
	if !slices.Equal(directiveIDs(router.sent["a"]), []string{"disarm-c-here"}) || !slices.Contains(router.changed, "c-here") {
		t.Fatalf("sent %v, changed %v", router.sent, router.changed)
	}
}
