package security

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/livedump/livedump/controller"
	"github.com/livedump/livedump/controller/api"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/harness"
)

func batchMsg(evs []*livedumpv1.TriggerEvent) *livedumpv1.ConnectRequest {
	return &livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_EventBatch{EventBatch: &livedumpv1.EventBatch{Events: evs}}}
}

// TestAttacker7_EventBatchLimits: a stolen agent identity uses the
// several-events-per-message form (EventBatch, issue 17) to get around the
// limits of issue 13. A batch over the bound the Welcome states ends the
// stream and none of it is stored; batches within the bound sent at ten
// times the agent's rate are limited per event, not per message (what is
// stored stays within the rate, the rest is refused rate_limited and
// acked); and the per-event limits hold inside a batch.
func TestAttacker7_EventBatchLimits(t *testing.T) {
	c := harness.StartController(t, func(cfg *controller.Config) {
		cfg.EventRate, cfg.EventBurst = 20, 20
	})
	thief := c.EnrollRaw(t, "LAB-07", map[string]string{"site": "lab"})
	op := c.Fleet(t, pki.RoleOperator)

	t.Run("oversized batch", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st, err := thief.Client().Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Hello{Hello: &livedumpv1.Hello{AgentId: thief.ID, Inventory: harness.Inventory("LAB-07")}}}); err != nil {
			t.Fatal(err)
		}
		m, err := st.Recv()
		if err != nil || m.GetWelcome() == nil {
			t.Fatalf("welcome: %v %v", m, err)
		}
		if got := m.GetWelcome().GetMaxEventBatch(); got != api.MaxEventBatch {
			t.Fatalf("welcome max_event_batch = %d, want %d", got, api.MaxEventBatch)
		}
		own := evCapture(t, op, "site=lab")
		var evs []*livedumpv1.TriggerEvent
		for range api.MaxEventBatch + 1 {
			evs = append(evs, evEvent(thief.ID, own))
		}
		if err := st.Send(batchMsg(evs)); err != nil {
			t.Fatal(err)
		}
		for {
			m, err := st.Recv()
			if err != nil {
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "event_batch") {
					t.Fatalf("stream ended with %v, want invalid_argument about event_batch", err)
				}
				break
			}
			if a := m.GetEventAck(); a != nil {
				t.Fatalf("events of an oversized batch acked: %v", a)
			}
		}
		time.Sleep(300 * time.Millisecond) // longer than an ingest batch
		if n := evStored(t, c, own); n != 0 {
			t.Fatalf("%d events of an oversized batch stored, want 0", n)
		}
		if _, err := op.CancelCapture(context.Background(), &livedumpv1.CancelCaptureRequest{Id: own}); err != nil {
			t.Fatal(err)
		}
	})

	st := evConnect(t, thief, "LAB-07")
	own := evCapture(t, op, "site=lab")

	t.Run("batches over the rate", func(t *testing.T) {
		before := evMetric(t, c.Metrics, evRefusedMetric, "reason", "rate_limited")
		// 4 full batches at once: 256 events, ten times the burst.
		start := time.Now()
		want := map[string]bool{}
		for range 4 {
			var evs []*livedumpv1.TriggerEvent
			for range api.MaxEventBatch {
				ev := evEvent(thief.ID, own)
				want[ev.GetId()] = true
				evs = append(evs, ev)
			}
			st.send(batchMsg(evs))
		}
		sent := len(want)
		refused := awaitAcks(t, st.acks, want)
		elapsed := time.Since(start)
		stored := evStored(t, c, own)
		if allowed := 20 + int(20*elapsed.Seconds()) + 1; stored > allowed {
			t.Errorf("%d of %d events stored in %s; the rate allows at most %d", stored, sent, elapsed, allowed)
		}
		if stored+len(refused) != sent {
			t.Errorf("%d stored + %d refused != %d sent", stored, len(refused), sent)
		}
		for id, r := range refused {
			if !strings.HasPrefix(r, "rate_limited") {
				t.Fatalf("event %s refused for %q, want rate_limited", id, r)
			}
		}
		if got := evMetric(t, c.Metrics, evRefusedMetric, "reason", "rate_limited"); int(got-before) != len(refused) {
			t.Errorf("%s{reason=rate_limited} rose by %v, want %d", evRefusedMetric, got-before, len(refused))
		}
	})

	t.Run("per-event limits inside a batch", func(t *testing.T) {
		time.Sleep(1100 * time.Millisecond) // the bucket fills again
		stored := evStored(t, c, own)
		ok := evEvent(thief.ID, own)
		huge := evEvent(thief.ID, own)
		huge.Process = strings.Repeat("A", 1<<20)
		forged := evEvent("someone-else", own)
		st.send(batchMsg([]*livedumpv1.TriggerEvent{ok, huge, forged}))
		want := map[string]bool{ok.GetId(): true, huge.GetId(): true, forged.GetId(): true}
		refused := awaitAcks(t, st.acks, want)
		if r := refused[huge.GetId()]; !strings.HasPrefix(r, "too_large") {
			t.Errorf("1 MiB process in a batch refused for %q, want too_large", r)
		}
		if r := refused[forged.GetId()]; !strings.HasPrefix(r, "invalid") {
			t.Errorf("another agent's event in a batch refused for %q, want invalid", r)
		}
		if r, ok := refused[ok.GetId()]; ok {
			t.Errorf("valid event in a batch refused: %q", r)
		}
		if n := evStored(t, c, own); n != stored+1 {
			t.Errorf("%d events stored, want %d (only the valid one)", n, stored+1)
		}
	})
}

// awaitAcks waits up to 30 s until every event in want is acked (stored or
// refused), and returns the refusals by event ID.
func awaitAcks(t *testing.T, acks <-chan *livedumpv1.EventAck, want map[string]bool) map[string]string {
	t.Helper()
	sent := len(want)
	refused := map[string]string{}
	deadline := time.After(30 * time.Second)
	for len(want) > 0 {
		select {
		case a := <-acks:
			for _, id := range a.GetEventIds() {
				delete(want, id)
			}
			for _, r := range a.GetRefused() {
				refused[r.GetEventId()] = r.GetReason()
			}
		case <-deadline:
			t.Fatalf("%d of %d events never acked", len(want), sent)
		}
	}
	return refused
}
