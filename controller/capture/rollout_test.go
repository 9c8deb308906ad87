package capture

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/store"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// fakeEnder records the captures the rollout ends.
type fakeEnder struct{ ends []string } // id state detail

func (e *fakeEnder) end(_ context.Context, c store.Capture, state, detail, _ string) error {
	e.ends = append(e.ends, c.ID+" "+state+" "+detail)
	return nil
}

type noLimits struct{}

func (noLimits) forgetFull(time.Time) {}

type rolloutFixture struct {
	t     *testing.T
	st    store.Store
	fleet *fleet.Registry
	clock *clockwork.FakeClock
	queue chan ingest
	kick  wakeup
	ender *fakeEnder
	watch *fakeWatchers
	adm   *fakeAdmission
	r     *rollout
}

func newRolloutFixture(t *testing.T, watched ...string) *rolloutFixture {
	f := &rolloutFixture{
		t: t, st: openStore(t), fleet: fleet.NewRegistry(nil), clock: newFakeClock(), queue: make(chan ingest, 16), kick: make(wakeup, 1),
		ender: &fakeEnder{}, watch: newFakeWatchers(watched...), adm: &fakeAdmission{},
	}
	f.r = newRollout(rolloutConfig{
		store: f.st, sessions: f.fleet, clock: f.clock, log: discard(), queue: f.queue, kick: f.kick,
		ender: f.ender, watchers: f.watch, admission: f.adm, limits: noLimits{}, reg: prometheus.NewRegistry(),
	})
	return f
}

func (f *rolloutFixture) schedule() {
	f.t.Helper()
	if err := f.r.schedule(context.Background()); err != nil {
		f.t.Fatal(err)
	}
}

// drain returns the IDs of the directives waiting on s.
func drain(s *fleet.Session) (ids []string) {
	for {
		select {
		case m := <-s.Outbox():
			ids = append(ids, m.GetDirective().GetId())
		default:
			return ids
		}
	}
}

func (f *rolloutFixture) target(captureID, agentID string) store.CaptureTarget {
	f.t.Helper()
	ts, err := f.st.ListTargets(context.Background(), captureID)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, t := range ts {
		if t.AgentID == agentID {
			return t
		}
	}
	f.t.Fatalf("no target %s of %s", agentID, captureID)
	return store.CaptureTarget{}
}

// TestRolloutArmsOnlineTargetsOncePerSession: the arm directive goes to
// each online target once, not again at the next pass, again to a session
// that replaced the one it went to, and to an offline target when it
// comes online.
func TestRolloutArmsOnlineTargetsOncePerSession(t *testing.T) {
	f := newRolloutFixture(t, "c-1")
	storeCapture(t, f.st, "c-1", `{"selector":"x","processes":["app.exe"]}`, f.clock.Now(), map[string]string{"a": TargetPending, "b": TargetArmed, "c": TargetPending})
	sa := f.fleet.Attach("a", f.clock.Now(), func(error) {})
	sb := f.fleet.Attach("b", f.clock.Now(), func(error) {})

	f.schedule()
	for name, s := range map[string]*fleet.Session{"a": sa, "b": sb} {
		if got := drain(s); !slices.Equal(got, []string{"arm-c-1"}) {
			t.Errorf("agent %s got %v, want one arm-c-1", name, got)
		}
	}
	if st := f.target("c-1", "a").State; st != TargetDelivered {
		t.Errorf("pending target a is %s after delivery, want delivered", st)
	}
	if st := f.target("c-1", "c").State; st != TargetPending {
		t.Errorf("offline target c is %s, want pending", st)
	}
	// Only the claimed target is published: b was armed already.
	if !slices.Equal(f.watch.targets, []string{"c-1/a"}) {
		t.Errorf("published targets %v, want [c-1/a]", f.watch.targets)
	}
	if _, ok := f.adm.active["c-1"]["c"]; !ok || len(f.adm.active["c-1"]) != 3 {
		t.Errorf("admission refreshed with %v, want c-1's three targets", f.adm.active)
	}
	if !slices.Equal(f.watch.relayed, []string{"c-1"}) {
		t.Errorf("relayed %v, want the watched c-1", f.watch.relayed)
	}

	f.schedule()
	if got := append(drain(sa), drain(sb)...); len(got) != 0 {
		t.Fatalf("sent again on the same sessions: %v", got)
	}

	// a reconnects; c comes online.
	f.fleet.Detach(sa)
	sa2 := f.fleet.Attach("a", f.clock.Now(), func(error) {})
	sc := f.fleet.Attach("c", f.clock.Now(), func(error) {})
	f.schedule()
	for name, s := range map[string]*fleet.Session{"a (new session)": sa2, "c": sc} {
		if got := drain(s); !slices.Equal(got, []string{"arm-c-1"}) {
			t.Errorf("%s got %v, want one arm-c-1", name, got)
		}
	}
	if got := drain(sb); len(got) != 0 {
		t.Errorf("b got %v again", got)
	}
	if n := testutil.ToFloat64(f.r.metrics.directives); n != 4 {
		t.Errorf("directives_sent_total = %v, want 4", n)
	}
}

// TestRolloutRate: a rollout rate of one agent a minute claims the first
// target at once and one more a minute later.
func TestRolloutRate(t *testing.T) {
	f := newRolloutFixture(t)
	storeCapture(t, f.st, "c-1", `{"selector":"x","rolloutRate":1}`, f.clock.Now(), map[string]string{"a": TargetPending, "b": TargetPending, "c": TargetPending})
	var ss []*fleet.Session
	for _, id := range []string{"a", "b", "c"} {
		ss = append(ss, f.fleet.Attach(id, f.clock.Now(), func(error) {}))
	}
	armed := func() int {
		n := 0
		for _, s := range ss {
			n += len(drain(s))
		}
		return n
	}
	f.schedule()
	if n := armed(); n != 1 {
		t.Fatalf("%d armed at once, want 1", n)
	}
	f.schedule()
	if n := armed(); n != 0 {
		t.Fatalf("%d more armed within the minute, want 0", n)
	}
	f.clock.Advance(time.Minute)
	f.schedule()
	if n := armed(); n != 1 {
		t.Fatalf("%d armed after a minute, want 1", n)
	}
}

// TestRolloutEndsCaptures: a pass ends captures that expired, reached
// max-dumps or whose targets all finished, and admits events only for the
// rest.
func TestRolloutEndsCaptures(t *testing.T) {
	f := newRolloutFixture(t)
	ctx := context.Background()
	now := f.clock.Now()
	storeCapture(t, f.st, "c-expired", `{"selector":"x"}`, now.Add(-2*time.Hour), map[string]string{"a": TargetArmed})
	storeCapture(t, f.st, "c-dumps", `{"selector":"x","action":"CAPTURE_ACTION_DUMP","maxDumps":2}`, now, map[string]string{"a": TargetArmed, "b": TargetArmed})
	storeCapture(t, f.st, "c-finished", `{"selector":"x"}`, now, map[string]string{"a": TargetDone, "b": TargetFailed})
	storeCapture(t, f.st, "c-live", `{"selector":"x","action":"CAPTURE_ACTION_DUMP","maxDumps":2}`, now, map[string]string{"a": TargetArmed})
	storeCapture(t, f.st, "c-allfailed", `{"selector":"x"}`, now, map[string]string{"a": TargetFailed, "b": TargetFailed})
	if _, err := f.st.SetTargetStates(ctx, []store.CaptureTarget{
		{CaptureID: "c-allfailed", AgentID: "a", State: TargetFailed, Detail: "dtrace: probe description syscall::NtFoo:return does not match any probes", Updated: now},
		{CaptureID: "c-allfailed", AgentID: "b", State: TargetFailed, Detail: "dtrace: probe description syscall::NtFoo:return does not match any probes", Updated: now},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.InsertEvents(ctx, []store.Event{
		{ID: "ev-000001", CaptureID: "c-dumps", AgentID: "a", Time: now, User: "[]", Kernel: "[]"},
		{ID: "ev-000002", CaptureID: "c-dumps", AgentID: "b", Time: now, User: "[]", Kernel: "[]"},
		{ID: "ev-000003", CaptureID: "c-live", AgentID: "a", Time: now, User: "[]", Kernel: "[]"},
	}); err != nil {
		t.Fatal(err)
	}
	f.schedule()
	slices.Sort(f.ender.ends)
	want := []string{
		"c-allfailed failed every target failed (2): dtrace: probe description syscall::NtFoo:return does not match any probes",
		"c-dumps done max-dumps 2 reached", "c-expired expired expired", "c-finished done every target finished",
	}
	if !slices.Equal(f.ender.ends, want) {
		t.Fatalf("ended %q, want %q", f.ender.ends, want)
	}
	if len(f.adm.active) != 1 || f.adm.active["c-live"] == nil {
		t.Fatalf("admission refreshed with %v, want only c-live", f.adm.active)
	}
}

// TestOutcome: a capture whose targets all finished is failed only when
// every one failed, and then says why with the most common reason.
func TestOutcome(t *testing.T) {
	tg := func(state, detail string) store.CaptureTarget {
		return store.CaptureTarget{State: state, Detail: detail}
	}
	for _, tc := range []struct {
		name          string
		targets       []store.CaptureTarget
		state, detail string
	}{
		{"all done", []store.CaptureTarget{tg(TargetDone, ""), tg(TargetDone, "")}, StateDone, "every target finished"},
		{"mixed", []store.CaptureTarget{tg(TargetFailed, "x"), tg(TargetDone, "")}, StateDone, "every target finished"},
		{"failed and expired", []store.CaptureTarget{tg(TargetFailed, "x"), tg(TargetExpired, "")}, StateDone, "every target finished"},
		{"one failed", []store.CaptureTarget{tg(TargetFailed, "dtrace exited 1")}, StateFailed, "every target failed: dtrace exited 1"},
		{"no reason", []store.CaptureTarget{tg(TargetFailed, ""), tg(TargetFailed, "")}, StateFailed, "every target failed (2)"},
		{"most common reason", []store.CaptureTarget{tg(TargetFailed, "b"), tg(TargetFailed, "a"), tg(TargetFailed, "a")}, StateFailed, "every target failed (3); 2 with: a"},
		{"a tie takes the first by name", []store.CaptureTarget{tg(TargetFailed, "b"), tg(TargetFailed, "a")}, StateFailed, "every target failed (2); 1 with: a"},
		{"long reason", []store.CaptureTarget{tg(TargetFailed, strings.Repeat("é", 600))}, StateFailed, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state, detail := outcome(tc.targets)
			if state != tc.state {
				t.Errorf("state %q, want %q", state, tc.state)
			}
			if tc.detail != "" && detail != tc.detail {
				t.Errorf("detail %q, want %q", detail, tc.detail)
			}
			if len(detail) > 1024 || !utf8.ValidString(detail) {
				t.Errorf("detail of %d bytes, valid UTF-8 %v", len(detail), utf8.ValidString(detail))
			}
		})
	}
}

// TestCapturesByStateMetric: the gauge has every state, failed included,
// from the first scrape, and counts the stored captures.
func TestCapturesByStateMetric(t *testing.T) {
	f := newRolloutFixture(t)
	// Counted before anything asks for a label value (which would make it).
	if n := testutil.CollectAndCount(f.r.metrics.byState); n != len(captureStates) {
		t.Errorf("%d series, want %d", n, len(captureStates))
	}
	for _, st := range captureStates {
		if n := testutil.ToFloat64(f.r.metrics.byState.WithLabelValues(st)); n != 0 {
			t.Errorf("captures{state=%q} = %g before a pass, want 0", st, n)
		}
	}
	storeCapture(t, f.st, "c-1", `{"selector":"x"}`, f.clock.Now(), map[string]string{"a": TargetFailed})
	f.schedule() // ends c-1 through the fake ender: still active in the store
	if n := testutil.ToFloat64(f.r.metrics.byState.WithLabelValues(StateActive)); n != 1 {
		t.Errorf("captures{state=active} = %g, want 1", n)
	}
	if _, err := f.st.FinishCapture(context.Background(), "c-1", StateFailed, "every target failed"); err != nil {
		t.Fatal(err)
	}
	f.schedule()
	if n := testutil.ToFloat64(f.r.metrics.byState.WithLabelValues(StateFailed)); n != 1 {
		t.Errorf("captures{state=failed} = %g, want 1", n)
	}
}

// TestAcked: an ok ack is counted; a rejected arm fails its target through
// the ingest queue with the agent's reason; an ack of a directive the
// rollout did not send is ignored.
func TestAcked(t *testing.T) {
	f := newRolloutFixture(t)
	ctx := context.Background()
	storeCapture(t, f.st, "c-1", `{"selector":"x"}`, f.clock.Now(), map[string]string{"a": TargetPending, "b": TargetPending})
	f.fleet.Attach("a", f.clock.Now(), func(error) {})
	f.fleet.Attach("b", f.clock.Now(), func(error) {})
	f.schedule()

	f.r.Acked(ctx, "a", &livedumpv1.Ack{DirectiveId: "arm-c-1"})
	f.r.Acked(ctx, "a", &livedumpv1.Ack{DirectiveId: "arm-c-1", Error: "twice"}) // no longer waited for
	f.r.Acked(ctx, "b", &livedumpv1.Ack{DirectiveId: "prov-7", Error: "not ours"})
	f.r.Acked(ctx, "b", &livedumpv1.Ack{DirectiveId: "arm-c-1", Error: "unknown field"})
	if ok, rej := testutil.ToFloat64(f.r.metrics.acked.WithLabelValues("ok")), testutil.ToFloat64(f.r.metrics.acked.WithLabelValues("rejected")); ok != 1 || rej != 1 {
		t.Fatalf("acked ok %v rejected %v, want 1 and 1", ok, rej)
	}
	select {
	case it := <-f.queue:
		st := it.status
		if it.agentID != "b" || st.GetCaptureId() != "c-1" || st.GetState() != livedumpv1.TargetState_TARGET_STATE_FAILED || !strings.Contains(st.GetDetail(), "unknown field") {
			t.Fatalf("queued %s %v", it.agentID, st)
		}
	default:
		t.Fatal("the rejected arm queued no state")
	}
	if len(f.queue) != 0 {
		t.Fatalf("%d more states queued", len(f.queue))
	}
}

// TestApplyStatuses: reported states move targets of an active capture; a
// late non-final report cannot reopen an ended capture's target, a final
// one is kept; an unknown capture's are dropped; a final state asks for a
// scheduler pass.
func TestApplyStatuses(t *testing.T) {
	f := newRolloutFixture(t)
	ctx := context.Background()
	storeCapture(t, f.st, "c-live", `{"selector":"x"}`, f.clock.Now(), map[string]string{"a": TargetDelivered, "b": TargetDelivered})
	storeCapture(t, f.st, "c-ended", `{"selector":"x"}`, f.clock.Now(), map[string]string{"a": TargetCancelled, "b": TargetCancelled})
	if _, err := f.st.FinishCapture(ctx, "c-ended", StateCancelled, "test"); err != nil {
		t.Fatal(err)
	}
	st := func(id string, s livedumpv1.TargetState) *livedumpv1.CaptureStatus {
		return &livedumpv1.CaptureStatus{CaptureId: id, State: s, Detail: "d"}
	}
	f.r.applyStatuses(ctx, []ingest{
		{agentID: "a", status: st("c-live", livedumpv1.TargetState_TARGET_STATE_ARMED)},
		{agentID: "a", status: st("c-ended", livedumpv1.TargetState_TARGET_STATE_ARMED)},
		{agentID: "b", status: st("c-ended", livedumpv1.TargetState_TARGET_STATE_DONE)},
		{agentID: "a", status: st("c-none", livedumpv1.TargetState_TARGET_STATE_DONE)},
	})
	for _, tc := range []struct{ capture, agent, want string }{
		{"c-live", "a", TargetArmed}, {"c-live", "b", TargetDelivered}, {"c-ended", "a", TargetCancelled}, {"c-ended", "b", TargetDone},
	} {
		if got := f.target(tc.capture, tc.agent).State; got != tc.want {
			t.Errorf("%s/%s is %s, want %s", tc.capture, tc.agent, got, tc.want)
		}
	}
	if !slices.Equal(f.watch.targets, []string{"c-live/a", "c-ended/b"}) {
		t.Errorf("published %v", f.watch.targets)
	}
	if !kicked(f.kick) {
		t.Error("a final state asked for no scheduler pass")
	}
	f.r.applyStatuses(ctx, []ingest{{agentID: "b", status: st("c-live", livedumpv1.TargetState_TARGET_STATE_ARMED)}})
	if kicked(f.kick) {
		t.Error("a non-final state asked for a scheduler pass")
	}
}

func TestDumpLimits(t *testing.T) {
	f := newRolloutFixture(t)
	for _, tc := range []struct {
		name, spec       string
		maxDumps, perSig int
	}{
		{"stacks capture", `{"selector":"x","maxDumps":5,"dumpsPerSignature":2}`, 0, 2},
		{"dump capture", `{"selector":"x","action":"CAPTURE_ACTION_DUMP","maxDumps":5,"dumpsPerSignature":2}`, 5, 2},
		{"on demand", `{"selector":"x","onDemand":true,"maxDumps":3}`, 3, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "c-" + strings.ReplaceAll(tc.name, " ", "-")
			storeCapture(t, f.st, id, tc.spec, f.clock.Now(), nil)
			m, p, err := f.r.DumpLimits(context.Background(), id)
			if err != nil || m != tc.maxDumps || p != tc.perSig {
				t.Fatalf("got %d %d %v, want %d %d", m, p, err, tc.maxDumps, tc.perSig)
			}
		})
	}
	if m, p, err := f.r.DumpLimits(context.Background(), "c-none"); m != 0 || p != 0 || err != nil {
		t.Fatalf("unknown capture: %d %d %v", m, p, err)
	}
}
