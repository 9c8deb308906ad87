package capture

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlite"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

func TestCheckEvent(t *testing.T) {
	long := strings.Repeat("x", MaxEventString+1)
	frames := func(n int) []*livedumpv1.Frame {
		out := make([]*livedumpv1.Frame, n)
		for i := range out {
			out[i] = &livedumpv1.Frame{Module: "m", Function: "f"}
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		edit   func(*livedumpv1.TriggerEvent)
		reason string
		field  string
	}{
		{"valid", func(*livedumpv1.TriggerEvent) {}, "", ""},
		{"the most frames", func(e *livedumpv1.TriggerEvent) {
			e.UserFrames, e.KernelFrames = frames(MaxEventFrames), frames(MaxEventFrames)
		}, "", ""},
		{"short id", func(e *livedumpv1.TriggerEvent) { e.Id = "x" }, RefusedInvalid, "id"},
		{"another agent", func(e *livedumpv1.TriggerEvent) { e.AgentId = "b" }, RefusedInvalid, "agent_id"},
		{"capture id", func(e *livedumpv1.TriggerEvent) { e.CaptureId = "C/../x" }, RefusedInvalid, "capture_id"},
		{"user frames", func(e *livedumpv1.TriggerEvent) { e.UserFrames = frames(MaxEventFrames + 1) }, RefusedTooLarge, "user_frames"},
		{"kernel frames", func(e *livedumpv1.TriggerEvent) { e.KernelFrames = frames(10000) }, RefusedTooLarge, "kernel_frames"},
		{"process", func(e *livedumpv1.TriggerEvent) { e.Process = long }, RefusedTooLarge, "process"},
		{"probe", func(e *livedumpv1.TriggerEvent) { e.Probe = long }, RefusedTooLarge, "probe"},
		{"hostname", func(e *livedumpv1.TriggerEvent) { e.Hostname = long }, RefusedTooLarge, "hostname"},
		{"module", func(e *livedumpv1.TriggerEvent) { e.UserFrames[0].Module = long }, RefusedTooLarge, "user_frames[0]"},
		{"function", func(e *livedumpv1.TriggerEvent) { e.KernelFrames = []*livedumpv1.Frame{{Function: long}} }, RefusedTooLarge, "kernel_frames[0]"},
		{"whole event", func(e *livedumpv1.TriggerEvent) {
			e.UserFrames, e.KernelFrames = frames(MaxEventFrames), frames(MaxEventFrames)
			for _, f := range append(e.UserFrames, e.KernelFrames...) {
				f.Module, f.Function = strings.Repeat("m", 200), strings.Repeat("f", 200)
			}
		}, RefusedTooLarge, "event of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := event("a", "c-1", 1)
			tc.edit(ev)
			r := checkEvent("a", ev)
			if tc.reason == "" {
				if r != nil {
					t.Fatalf("refused: %v", r)
				}
				return
			}
			if r == nil || r.reason != tc.reason || !strings.HasPrefix(r.detail, tc.field) {
				t.Fatalf("got %v, want %s naming %s", r, tc.reason, tc.field)
			}
		})
	}
}

func event(agentID, captureID string, i int) *livedumpv1.TriggerEvent {
	return &livedumpv1.TriggerEvent{
		Id: fmt.Sprintf("ev-%s-%08d", captureID, i), CaptureId: captureID, AgentId: agentID, Time: timestamppb.Now(),
		Process: "app.exe", Probe: "syscall::NtCreateFile:return", UserFrames: []*livedumpv1.Frame{{Module: "ntdll", Function: "NtCreateFile"}},
	}
}

type fixture struct {
	t     *testing.T
	st    store.Store
	m     *Manager
	clock *clockwork.FakeClock
	reg   *prometheus.Registry
	fleet *fleet.Registry
}

func newFixture(t *testing.T, edit func(*Config)) *fixture {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clock := clockwork.NewFakeClockAt(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
	for _, id := range []string{"a", "b"} {
		if err := st.CreateAgent(ctx, store.Agent{ID: id, Hostname: "HOST-" + strings.ToUpper(id), FirstSeen: clock.Now(), LastSeen: clock.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	fl := fleet.NewRegistry(prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"}))
	cfg := Config{Store: st, Fleet: fl, Clock: clock, Metrics: reg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if edit != nil {
		edit(&cfg)
	}
	return &fixture{t: t, st: st, m: New(cfg), clock: clock, reg: reg, fleet: fl}
}

// capture stores an active capture targeting agents.
func (f *fixture) capture(id string, agents ...string) {
	f.t.Helper()
	now := f.clock.Now()
	var targets []store.CaptureTarget
	for _, a := range agents {
		targets = append(targets, store.CaptureTarget{AgentID: a, State: TargetArmed, Updated: now})
	}
	if err := f.st.CreateCapture(context.Background(), store.Capture{ID: id, Spec: `{"selector":"x"}`, State: StateActive, Created: now,
		Expires: now.Add(time.Hour), Statuses: "[]"}, targets); err != nil {
		f.t.Fatal(err)
	}
}

// send ingests evs from agentID's session and flushes them as one batch; it
// returns the ack the session received.
func (f *fixture) send(agentID string, evs ...*livedumpv1.TriggerEvent) *livedumpv1.EventAck {
	f.t.Helper()
	ctx := context.Background()
	s := f.fleet.Session(agentID)
	if s == nil {
		s = f.fleet.Attach(agentID, f.clock.Now(), func(error) {})
	}
	for _, ev := range evs {
		if err := f.m.Ingest(ctx, s, agentID, ev); err != nil {
			f.t.Fatal(err)
		}
	}
	var batch []ingest
	for range evs {
		batch = append(batch, <-f.m.ingester.queue)
	}
	f.m.ingester.flush(ctx, batch)
	for {
		select {
		case m := <-s.Outbox():
			if a := m.GetEventAck(); a != nil {
				return a
			}
		default:
			f.t.Fatal("no ack")
			return nil
		}
	}
}

func (f *fixture) stored(captureID string) int {
	f.t.Helper()
	rows, err := f.st.ListEvents(context.Background(), captureID, 0, 100000)
	if err != nil {
		f.t.Fatal(err)
	}
	return len(rows)
}

func (f *fixture) refused(reason string) float64 {
	return testutil.ToFloat64(f.m.refusals.refused.WithLabelValues(reason))
}

func TestAdmission(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	f.capture("c-own", "a")
	f.capture("c-other", "b")
	f.capture("c-ended", "a")
	if _, err := f.m.Cancel(ctx, "c-ended", "test"); err != nil {
		t.Fatal(err)
	}

	ack := f.send("a", event("a", "c-own", 1), event("a", "c-other", 1), event("b", "c-ended", 1), event("a", "c-none", 1))
	if len(ack.GetEventIds()) != 4 {
		t.Fatalf("acked %v, want all 4 (stored or refused for good)", ack.GetEventIds())
	}
	want := map[string]string{"ev-c-other-00000001": RefusedNotTarget, "ev-c-ended-00000001": RefusedInvalid, "ev-c-none-00000001": RefusedCaptureUnknown}
	if len(ack.GetRefused()) != len(want) {
		t.Fatalf("refused %v", ack.GetRefused())
	}
	for _, r := range ack.GetRefused() {
		if !strings.HasPrefix(r.GetReason(), want[r.GetEventId()]+": ") {
			t.Errorf("event %s refused as %q, want %s", r.GetEventId(), r.GetReason(), want[r.GetEventId()])
		}
	}
	for id, n := range map[string]int{"c-own": 1, "c-other": 0, "c-ended": 0, "c-none": 0} {
		if got := f.stored(id); got != n {
			t.Errorf("%d events stored for %s, want %d", got, id, n)
		}
	}
	for _, r := range []string{RefusedNotTarget, RefusedInvalid, RefusedCaptureUnknown} {
		if got := f.refused(r); got != 1 {
			t.Errorf("refused{%s} = %v, want 1", r, got)
		}
	}

	// An ended capture that never targeted the agent takes nothing.
	if ack := f.send("b", event("b", "c-ended", 2)); len(ack.GetRefused()) != 1 || !strings.HasPrefix(ack.GetRefused()[0].GetReason(), RefusedCaptureNotActive) {
		t.Fatalf("b's event for c-ended: %v", ack.GetRefused())
	}

	// What the store said is remembered: the same events again cost no
	// look-up (the cache answers even with the store gone).
	f.st.Close()
	ack = f.send("a", event("a", "c-other", 2), event("b", "c-ended", 3), event("a", "c-none", 2))
	if len(ack.GetRefused()) != 3 {
		t.Fatalf("refused from the cache: %v", ack.GetRefused())
	}
}

// TestLateEvents: a target of an ended capture may deliver what it fired
// before the end (in flight, or spooled while it was offline), for
// LateEventGrace and never past the per-agent cap.
func TestLateEvents(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	f.capture("c-late", "a")
	if err := f.st.CreateCapture(ctx, store.Capture{ID: "c-cap", Spec: `{"selector":"x","perAgentCap":2}`, State: StateActive, Created: f.clock.Now(),
		Expires: f.clock.Now().Add(time.Hour), Statuses: "[]"}, []store.CaptureTarget{{AgentID: "a", State: TargetArmed, Updated: f.clock.Now()}}); err != nil {
		t.Fatal(err)
	}
	if ack := f.send("a", event("a", "c-cap", 1)); len(ack.GetRefused()) != 0 {
		t.Fatal(ack.GetRefused())
	}
	for _, id := range []string{"c-late", "c-cap"} {
		if _, err := f.m.Cancel(ctx, id, "test"); err != nil {
			t.Fatal(err)
		}
	}
	f.clock.Advance(LateEventGrace / 2)
	if ack := f.send("a", event("a", "c-late", 1), event("a", "c-cap", 2)); len(ack.GetRefused()) != 0 {
		t.Fatalf("late events within the grace and the cap refused: %v", ack.GetRefused())
	}
	if ack := f.send("a", event("a", "c-cap", 3)); len(ack.GetRefused()) != 1 || !strings.HasPrefix(ack.GetRefused()[0].GetReason(), RefusedCaptureNotActive) {
		t.Fatalf("a late event past the per-agent cap of 2: %v", ack.GetRefused())
	}
	f.clock.Advance(LateEventGrace / 2)
	if ack := f.send("a", event("a", "c-late", 2)); len(ack.GetRefused()) != 1 {
		t.Fatalf("a late event after the grace: %v", ack.GetRefused())
	}
	if n, m := f.stored("c-late"), f.stored("c-cap"); n != 1 || m != 2 {
		t.Fatalf("stored %d and %d, want 1 and 2", n, m)
	}
}

func TestAdmissionEndsWithTheCapture(t *testing.T) {
	f := newFixture(t, nil)
	f.capture("c-one", "a")
	if err := f.m.rollout.schedule(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r, known := f.m.ingester.admission.check("c-one", "a", f.clock.Now()); !known || r != nil {
		t.Fatalf("after a scheduler pass: %v %v", r, known)
	}
	if _, err := f.m.Cancel(context.Background(), "c-one", "test"); err != nil {
		t.Fatal(err)
	}
	// Forgotten at once: the next event reads the ended capture.
	if r, known := f.m.ingester.admission.check("c-one", "a", f.clock.Now()); known {
		t.Fatalf("after cancel: %v %v", r, known)
	}
}

func TestEventRateLimit(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.EventRate, c.EventBurst = 1, 2 })
	f.capture("c-own", "a")
	ack := f.send("a", event("a", "c-own", 1), event("a", "c-own", 2), event("a", "c-own", 3))
	if len(ack.GetRefused()) != 1 || !strings.HasPrefix(ack.GetRefused()[0].GetReason(), RefusedRateLimited) || ack.GetRefused()[0].GetEventId() != "ev-c-own-00000003" {
		t.Fatalf("refused %v, want the third as rate_limited", ack.GetRefused())
	}
	// Another agent has its own bucket.
	f.capture("c-b", "b")
	if ack := f.send("b", event("b", "c-b", 1)); len(ack.GetRefused()) != 0 {
		t.Fatalf("agent b refused: %v", ack.GetRefused())
	}
	f.clock.Advance(time.Second)
	if ack := f.send("a", event("a", "c-own", 4)); len(ack.GetRefused()) != 0 {
		t.Fatalf("refused a second later: %v", ack.GetRefused())
	}
	if n := f.stored("c-own"); n != 3 {
		t.Fatalf("%d stored, want 3", n)
	}
}

func TestRefusalsAuditedOncePerMinute(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	audit := func() []store.AuditEntry {
		es, err := f.st.ListAudit(ctx, store.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		return es
	}
	var evs []*livedumpv1.TriggerEvent
	for i := range 50 {
		evs = append(evs, event("a", fmt.Sprintf("c-none%d", i), 1))
	}
	f.send("a", evs...)
	if es := audit(); len(es) != 1 || es[0].Actor != "agent/a" || !strings.Contains(es[0].Outcome, RefusedCaptureUnknown) {
		t.Fatalf("audit after the first refusals: %+v", es)
	}
	f.m.refusals.flush(false)
	if es := audit(); len(es) != 1 {
		t.Fatalf("summary written before the minute ended: %+v", es)
	}
	f.clock.Advance(refusalWindow)
	f.m.refusals.flush(false)
	es := audit()
	if len(es) != 2 || !strings.Contains(es[0].Outcome, "49 more events") || len(es[0].Details) > 2048 {
		t.Fatalf("summary: %+v", es[0])
	}
	// The window is over: the next refusal is written at once again.
	f.send("a", event("a", "c-none", 9))
	if es := audit(); len(es) != 3 {
		t.Fatalf("%d audit entries, want 3", len(es))
	}
}

func TestEventsPage(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	f.capture("c-own", "a")
	var rows []store.Event
	const n = 60
	for i := range n {
		big := strings.Repeat("f", 500)
		ev := event("a", "c-own", i)
		for range 60 {
			ev.UserFrames = append(ev.UserFrames, &livedumpv1.Frame{Module: big, Function: big})
		}
		rows = append(rows, store.Event{ID: ev.GetId(), CaptureID: "c-own", AgentID: "a", Time: f.clock.Now(), User: framesJSON(ev.GetUserFrames()), Kernel: "[]"})
	}
	if _, err := f.st.InsertEvents(ctx, rows); err != nil {
		t.Fatal(err)
	}
	var all []string
	after := ""
	for pages := 0; ; pages++ {
		evs, next, err := f.m.EventsPage(ctx, "c-own", after, 1000, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		size := proto.Size(&livedumpv1.ListEventsResponse{Events: evs, Next: next})
		if size > 1<<20 || len(evs) == 0 {
			t.Fatalf("page of %d events, %d bytes", len(evs), size)
		}
		for _, e := range evs {
			all = append(all, e.GetId())
			if e.GetHostname() != "HOST-A" {
				t.Fatalf("hostname %q", e.GetHostname())
			}
		}
		if next == "" {
			break
		}
		if next != evs[len(evs)-1].GetId() {
			t.Fatalf("next %q is not the page's last event", next)
		}
		after = next
	}
	if len(all) != n || all[0] != rows[0].ID || all[n-1] != rows[n-1].ID {
		t.Fatalf("pages held %d events", len(all))
	}

	// The limit: next only when another event follows.
	evs, next, err := f.m.EventsPage(ctx, "c-own", "", 10, 0)
	if err != nil || len(evs) != 10 || next != evs[9].GetId() {
		t.Fatalf("limit 10: %d events, next %q, %v", len(evs), next, err)
	}
	evs, next, err = f.m.EventsPage(ctx, "c-own", rows[n-11].ID, 10, 0)
	if err != nil || len(evs) != 10 || next != "" {
		t.Fatalf("the last 10: %d events, next %q, %v", len(evs), next, err)
	}
}

// TestEventsFromBeforeTheLimits: events stored before the limits existed
// are cut to them when read, so one cannot break a page.
func TestEventsFromBeforeTheLimits(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	f.capture("c-old", "a")
	huge := strings.Repeat("A", 1<<20)
	ev := event("a", "c-old", 1)
	ev.UserFrames = []*livedumpv1.Frame{{Module: huge, Function: huge}}
	for range 300 {
		ev.UserFrames = append(ev.UserFrames, &livedumpv1.Frame{Module: "m"})
	}
	if _, err := f.st.InsertEvents(ctx, []store.Event{{ID: ev.GetId(), CaptureID: "c-old", AgentID: "a", Time: f.clock.Now(), Process: huge,
		User: framesJSON(ev.GetUserFrames()), Kernel: "[]"}}); err != nil {
		t.Fatal(err)
	}
	evs, _, err := f.m.EventsPage(ctx, "c-old", "", 10, 1<<20)
	if err != nil || len(evs) != 1 {
		t.Fatal(evs, err)
	}
	if size := proto.Size(evs[0]); size > 2*MaxEventFrames*MaxEventString+2*MaxEventString+1024 {
		t.Fatalf("old event read back as %d bytes", size)
	}
}
