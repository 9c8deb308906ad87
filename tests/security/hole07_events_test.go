package security

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/livedump/livedump/controller"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/tests/harness"
)

// evStream is the Connect stream of a stolen agent identity, spoken by hand.
type evStream struct {
	t    testing.TB
	mu   sync.Mutex // Send is not safe from two goroutines
	st   livedumpv1.AgentService_ConnectClient
	acks chan *livedumpv1.EventAck

	dmu  sync.Mutex
	dirs []*livedumpv1.Directive // every directive received
}

// directives returns the directives the stream has received so far.
func (s *evStream) directives() []*livedumpv1.Directive {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	return append([]*livedumpv1.Directive(nil), s.dirs...)
}

// evConnect opens the stolen identity's stream with a hello claiming
// hostname and answers every directive, as a real agent would.
func evConnect(t testing.TB, ra *harness.RawAgent, hostname string) *evStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := ra.Client().Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s := &evStream{t: t, st: st, acks: make(chan *livedumpv1.EventAck, 1<<16)}
	s.send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Hello{Hello: &livedumpv1.Hello{AgentId: ra.ID, Inventory: harness.Inventory(hostname)}}})
	m, err := st.Recv()
	if err != nil || m.GetWelcome() == nil {
		t.Fatalf("welcome: %v %v", m, err)
	}
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				return
			}
			if a := m.GetEventAck(); a != nil {
				s.acks <- a
			}
			if d := m.GetDirective(); d != nil {
				s.dmu.Lock()
				s.dirs = append(s.dirs, d)
				s.dmu.Unlock()
				_ = s.trySend(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Ack{Ack: &livedumpv1.Ack{DirectiveId: d.GetId()}}})
			}
		}
	}()
	return s
}

func (s *evStream) trySend(m *livedumpv1.ConnectRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.Send(m)
}

func (s *evStream) send(m *livedumpv1.ConnectRequest) {
	s.t.Helper()
	if err := s.trySend(m); err != nil {
		s.t.Fatalf("send: %v", err)
	}
}

// events sends evs and waits until the controller has answered every one
// (stored or refused: both are acked, so the agent drops them from its
// spool). It returns the refusal reasons by event ID.
func (s *evStream) events(evs ...*livedumpv1.TriggerEvent) map[string]string {
	s.t.Helper()
	want := map[string]bool{}
	for _, ev := range evs {
		want[ev.GetId()] = true
		s.send(&livedumpv1.ConnectRequest{Msg: &livedumpv1.ConnectRequest_Event{Event: ev}})
	}
	refused := map[string]string{}
	deadline := time.After(30 * time.Second)
	for len(want) > 0 {
		select {
		case a := <-s.acks:
			for _, id := range a.GetEventIds() {
				delete(want, id)
			}
			for _, r := range a.GetRefused() {
				refused[r.GetEventId()] = r.GetReason()
			}
		case <-deadline:
			s.t.Fatalf("%d of %d events never acked", len(want), len(evs))
		}
	}
	return refused
}

var evSeq int

// evEvent is a small plausible event of agent for capture.
func evEvent(agentID, captureID string) *livedumpv1.TriggerEvent {
	evSeq++
	return &livedumpv1.TriggerEvent{
		Id: fmt.Sprintf("ev%030d", evSeq), CaptureId: captureID, AgentId: agentID, Time: timestamppb.Now(),
		Pid: 4242, Tid: 4243, Process: "ms-teams.exe", Probe: "syscall::NtCreateFile:return", Status: 0xC000000D,
		UserFrames: []*livedumpv1.Frame{{Module: "ntdll", Function: "NtCreateFile", Offset: 0x14}, {Module: "teams", Function: "Open", Offset: 0x80}},
	}
}

// evCapture creates an active stacks capture on sel as an operator.
func evCapture(t testing.TB, op livedumpv1.FleetServiceClient, sel string, edit ...func(*livedumpv1.CaptureSpec)) string {
	t.Helper()
	spec := &livedumpv1.CaptureSpec{
		Selector: sel, Processes: []string{"ms-teams.exe"}, Statuses: []string{"STATUS_INVALID_PARAMETER"},
		Action: livedumpv1.CaptureAction_CAPTURE_ACTION_STACKS, Expire: durationpb.New(10 * time.Minute),
	}
	for _, e := range edit {
		e(spec)
	}
	// Force: the raw agents report no provisioning state.
	resp, err := op.CreateCapture(context.Background(), &livedumpv1.CreateCaptureRequest{Spec: spec, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetCapture().GetState() != livedumpv1.CaptureState_CAPTURE_STATE_ACTIVE || len(resp.GetCapture().GetTargets()) != 1 {
		t.Fatalf("capture on %s: %v", sel, resp.GetCapture())
	}
	return resp.GetCapture().GetId()
}

// evStored counts a capture's events in the store, whatever the API allows.
func evStored(t testing.TB, c *harness.Controller, captureID string) int {
	t.Helper()
	rows, err := c.Store().ListEvents(context.Background(), captureID, 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	return len(rows)
}

// evMetric returns a counter's value for one label value, 0 if absent.
func evMetric(t testing.TB, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

const evRefusedMetric = "livedump_controller_events_refused_total"

// TestHole07_EventsRefused: a stolen agent identity adds events to a capture
// that does not exist, one that has ended, one that does not target it, and
// oversized events to its own; none is stored, each is acked with its reason
// (so the agent drops it instead of sending it forever), counted and
// audited in bounded form.
func TestHole07_EventsRefused(t *testing.T) {
	c := harness.StartController(t, nil)
	ctx := context.Background()
	thief := c.EnrollRaw(t, "LAB-07", map[string]string{"site": "lab"})
	c.EnrollRaw(t, "OTHER-01", map[string]string{"site": "other"})
	st := evConnect(t, thief, "LAB-07")
	op := c.Fleet(t, pki.RoleOperator)
	own := evCapture(t, op, "site=lab")
	notMine := evCapture(t, op, "site=other")
	// Ended captures: one that never targeted the agent, and one that did,
	// whose per-agent cap of 1 the agent filled before the end (a target's
	// events fired before the end may arrive late, never past the cap).
	endedOther := evCapture(t, op, "site=other")
	ended := evCapture(t, op, "site=lab", func(s *livedumpv1.CaptureSpec) { s.PerAgentCap = 1 })
	if refused := st.events(evEvent(thief.ID, ended)); len(refused) != 0 {
		t.Fatalf("the capture's one event refused: %v", refused)
	}
	for _, id := range []string{ended, endedOther} {
		if _, err := op.CancelCapture(ctx, &livedumpv1.CancelCaptureRequest{Id: id}); err != nil {
			t.Fatal(err)
		}
	}
	const unknown = "c-0123456789ab"

	huge := strings.Repeat("A", 1<<20)
	manyFrames := evEvent(thief.ID, own)
	for range 10000 {
		manyFrames.UserFrames = append(manyFrames.UserFrames, &livedumpv1.Frame{Module: "m", Function: "f"})
	}
	hugeFrame := evEvent(thief.ID, own)
	hugeFrame.UserFrames[0].Function = huge
	hugeProcess := evEvent(thief.ID, own)
	hugeProcess.Process = huge
	hugeKernel := evEvent(thief.ID, own)
	hugeKernel.KernelFrames = []*livedumpv1.Frame{{Module: huge}}

	cases := []struct {
		name    string
		ev      *livedumpv1.TriggerEvent
		capture string
		reason  string
	}{
		{"unknown capture", evEvent(thief.ID, unknown), unknown, "capture_unknown"},
		{"ended capture", evEvent(thief.ID, endedOther), endedOther, "capture_not_active"},
		{"ended capture past its per-agent cap", evEvent(thief.ID, ended), ended, "capture_not_active"},
		{"capture not targeting the agent", evEvent(thief.ID, notMine), notMine, "not_target"},
		{"10k frames", manyFrames, own, "too_large"},
		{"1 MiB frame string", hugeFrame, own, "too_large"},
		{"1 MiB process", hugeProcess, own, "too_large"},
		{"1 MiB kernel module", hugeKernel, own, "too_large"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := evMetric(t, c.Metrics, evRefusedMetric, "reason", tc.reason)
			stored := evStored(t, c, tc.capture)
			refused := st.events(tc.ev)
			if n := evStored(t, c, tc.capture); n != stored {
				t.Errorf("%d events stored in capture %s, want %d", n, tc.capture, stored)
			}
			if got := refused[tc.ev.GetId()]; !strings.HasPrefix(got, tc.reason) {
				t.Errorf("ack refusal %q, want reason %s", got, tc.reason)
			}
			if got := evMetric(t, c.Metrics, evRefusedMetric, "reason", tc.reason); got != before+1 {
				t.Errorf("%s{reason=%q} = %v, want %v", evRefusedMetric, tc.reason, got, before+1)
			}
		})
	}

	// The path is not simply closed: a valid event of the agent's own
	// active capture is stored.
	if refused := st.events(evEvent(thief.ID, own)); len(refused) != 0 {
		t.Fatalf("valid event refused: %v", refused)
	}
	if n := evStored(t, c, own); n != 1 {
		t.Fatalf("%d events stored for the agent's own capture, want the 1 valid one", n)
	}

	// Audited, bounded: the first refusal of the minute is written at once,
	// the rest are counted into one summary, never one row per event.
	entries, err := c.Store().ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var rows int
	for _, e := range entries {
		if e.Actor == "agent/"+thief.ID && strings.Contains(e.Action, "Event") {
			rows++
			if len(e.Details) > 4096 {
				t.Errorf("audit details of %d bytes", len(e.Details))
			}
		}
	}
	if rows == 0 || rows >= len(cases) {
		t.Errorf("%d audit rows for %d refused events; want at least 1 and fewer than one per event", rows, len(cases))
	}
}

// TestHole07_EventFloodRateLimited: a stolen agent identity sends events to
// its own capture at ten times the allowed rate; the excess is refused and
// counted, and what is stored stays within the rate.
func TestHole07_EventFloodRateLimited(t *testing.T) {
	c := harness.StartController(t, func(cfg *controller.Config) {
		cfg.EventRate, cfg.EventBurst = 20, 20
	})
	thief := c.EnrollRaw(t, "LAB-07", map[string]string{"site": "lab"})
	st := evConnect(t, thief, "LAB-07")
	own := evCapture(t, c.Fleet(t, pki.RoleOperator), "site=lab")

	// 10x the rate for one second.
	start := time.Now()
	var evs []*livedumpv1.TriggerEvent
	for range 200 {
		evs = append(evs, evEvent(thief.ID, own))
	}
	refused := st.events(evs...)
	elapsed := time.Since(start)
	stored := evStored(t, c, own)
	allowed := 20 + int(20*elapsed.Seconds()) + 1
	if stored > allowed {
		t.Errorf("%d of %d events stored in %s; the rate allows at most %d", stored, len(evs), elapsed, allowed)
	}
	if stored+len(refused) != len(evs) {
		t.Errorf("%d stored + %d refused != %d sent", stored, len(refused), len(evs))
	}
	for id, r := range refused {
		if !strings.HasPrefix(r, "rate_limited") {
			t.Fatalf("event %s refused for %q, want rate_limited", id, r)
		}
	}
	if got := evMetric(t, c.Metrics, evRefusedMetric, "reason", "rate_limited"); int(got) != len(refused) {
		t.Errorf("%s{reason=rate_limited} = %v, want %d", evRefusedMetric, got, len(refused))
	}
}

// TestHole07_ViewerListsLargeEventsInPages: a capture full of events of the
// largest allowed size is listed by a viewer in pages that each stay well
// under gRPC's 4 MiB message limit, and the pages hold every event.
func TestHole07_ViewerListsLargeEventsInPages(t *testing.T) {
	c := harness.StartController(t, nil)
	ctx := context.Background()
	agent := c.EnrollRaw(t, "LAB-07", map[string]string{"site": "lab"})
	st := evConnect(t, agent, "LAB-07")
	own := evCapture(t, c.Fleet(t, pki.RoleOperator), "site=lab")

	const n = 100
	var evs []*livedumpv1.TriggerEvent
	for range n {
		ev := evEvent(agent.ID, own)
		ev.UserFrames = nil
		for i := range 60 {
			ev.UserFrames = append(ev.UserFrames, &livedumpv1.Frame{Module: fmt.Sprintf("%03d", i) + strings.Repeat("m", 497), Function: strings.Repeat("f", 500), Offset: uint64(i)})
		}
		evs = append(evs, ev)
	}
	if refused := st.events(evs...); len(refused) != 0 {
		t.Fatalf("events within the limits refused: %v", refused)
	}
	if got := evStored(t, c, own); got != n {
		t.Fatalf("%d events stored, want %d", got, n)
	}

	viewer := c.Fleet(t, pki.RoleViewer)
	seen := map[string]bool{}
	after := ""
	for pages := 0; ; pages++ {
		if pages > n {
			t.Fatal("paging does not end")
		}
		resp, err := viewer.ListEvents(ctx, &livedumpv1.ListEventsRequest{CaptureId: own, Limit: 1000, After: after})
		if err != nil {
			t.Fatalf("viewer events list: %v", err)
		}
		if size := proto.Size(resp); size > 2<<20 {
			t.Fatalf("page of %d bytes", size)
		}
		for _, e := range resp.GetEvents() {
			seen[e.GetId()] = true
		}
		if resp.GetNext() == "" {
			break
		}
		after = resp.GetNext()
	}
	if len(seen) != n {
		t.Fatalf("pages held %d events, want %d", len(seen), n)
	}
}
