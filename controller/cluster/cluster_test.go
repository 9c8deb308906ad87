package cluster

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlite"
	"github.com/livedump/livedump/internal/pki"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// lossyBus delivers nothing: every directive must then arrive through the
// catch-up query alone.
type lossyBus struct{}

func (lossyBus) Notify(context.Context, string, string) error { return nil }
func (lossyBus) Listen(ctx context.Context, _ []string, _ func(string, string)) error {
	<-ctx.Done()
	return nil
}

type replica struct {
	*Cluster
	fleet *fleet.Registry
	stop  func() // ends Run: the lease is no longer renewed, as in a crash
}

// twoReplicas runs replicas a and b on one store and one bus.
func twoReplicas(t *testing.T, bus Bus, lease time.Duration) (st store.Store, a, b replica) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "livedump.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	mk := func(id string) replica {
		f := fleet.NewRegistry(nil)
		c := New(Config{Store: st, Bus: bus, Fleet: f, ReplicaID: id, Lease: lease, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = c.Run(ctx) }()
		stop := func() { cancel(); <-done }
		t.Cleanup(stop)
		return replica{c, f, stop}
	}
	return st, mk("a"), mk("b")
}

// attach connects agentID's stream to r and returns the session and the
// cause its stream ends with.
func attach(t *testing.T, r replica, agentID string) (*fleet.Session, context.Context) {
	t.Helper()
	ctx, cancel := context.WithCancelCause(context.Background())
	t.Cleanup(func() { cancel(nil) })
	s := r.fleet.Attach(agentID, time.Now(), cancel)
	if err := r.Attached(context.Background(), agentID, "session-"+agentID); err != nil {
		t.Fatal(err)
	}
	return s, ctx
}

func recvDirective(t *testing.T, s *fleet.Session, within time.Duration) *livedumpv1.Directive {
	t.Helper()
	select {
	case m := <-s.Outbox():
		return m.GetDirective()
	case <-time.After(within):
		t.Fatalf("no directive within %s", within)
		return nil
	}
}

func TestSendReachesTheReplicaHoldingTheStream(t *testing.T) {
	for name, bus := range map[string]Bus{"notified": NewLocalBus(), "catch-up only": lossyBus{}} {
		t.Run(name, func(t *testing.T) {
			_, a, b := twoReplicas(t, bus, 15*time.Second)
			s, _ := attach(t, b, "agent-1")
			d := &livedumpv1.Directive{Id: "disarm-c-1", Kind: &livedumpv1.Directive_Disarm{Disarm: &livedumpv1.DisarmCapture{CaptureId: "c-1"}}}
			if err := a.Send(context.Background(), "agent-1", d); err != nil {
				t.Fatal(err)
			}
			// The catch-up query runs every second.
			if got := recvDirective(t, s, 3*time.Second); got.GetId() != d.GetId() {
				t.Fatalf("got directive %q, want %q", got.GetId(), d.GetId())
			}
			select {
			case m := <-s.Outbox():
				t.Fatalf("directive delivered twice: %v", m)
			case <-time.After(1500 * time.Millisecond):
			}
		})
	}
}

func TestCallRoundTripsThroughTheOtherReplica(t *testing.T) {
	for name, bus := range map[string]Bus{"notified": NewLocalBus(), "catch-up only": lossyBus{}} {
		t.Run(name, func(t *testing.T) {
			_, a, b := twoReplicas(t, bus, 15*time.Second)
			s, _ := attach(t, b, "agent-1")
			// The agent answers the directive it receives on b.
			go func() {
				d := <-s.Outbox()
				s.Deliver(&livedumpv1.ProvisionReport{DirectiveId: d.GetDirective().GetId(), State: livedumpv1.ProvisionState_PROVISION_STATE_READY, Detail: "done on b"})
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			rep, err := fleet.Call(ctx, a, "agent-1", &livedumpv1.Directive{Id: "prov-1", Kind: &livedumpv1.Directive_Provision{Provision: &livedumpv1.ProvisionDirective{}}})
			if err != nil {
				t.Fatal(err)
			}
			if rep.GetDetail() != "done on b" || rep.GetState() != livedumpv1.ProvisionState_PROVISION_STATE_READY {
				t.Fatalf("report %v", rep)
			}
		})
	}
}

// A self-test's report comes back through the other replica as a
// SelfTestReport; a ProvisionReport answering it (wrong type) is not
// taken for it.
func TestSelfTestRoundTripsThroughTheOtherReplica(t *testing.T) {
	_, a, b := twoReplicas(t, NewLocalBus(), 15*time.Second)
	s, _ := attach(t, b, "agent-1")
	go func() {
		d := <-s.Outbox()
		id := d.GetDirective().GetId()
		if s.Deliver(&livedumpv1.ProvisionReport{DirectiveId: id}) {
			t.Errorf("a provisioning report answered a self-test")
		}
		s.Deliver(&livedumpv1.SelfTestReport{DirectiveId: id, Checks: []*livedumpv1.SelfTestCheck{{Name: "dtrace.driver", Status: livedumpv1.SelfTestStatus_SELF_TEST_STATUS_PASS}}})
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep, err := a.Exchange(ctx, "agent-1", &livedumpv1.Directive{Id: "self-1", Kind: &livedumpv1.Directive_SelfTest{SelfTest: &livedumpv1.SelfTestDirective{}}})
	if err != nil {
		t.Fatal(err)
	}
	st, ok := rep.(*livedumpv1.SelfTestReport)
	if !ok || len(st.GetChecks()) != 1 || st.GetChecks()[0].GetName() != "dtrace.driver" {
		t.Fatalf("report %T %v", rep, rep)
	}
}

// An agent's log tail (agents describe) comes back through the other
// replica as an AgentLogReport; a SelfTestReport answering it is not taken
// for it.
func TestAgentLogRoundTripsThroughTheOtherReplica(t *testing.T) {
	_, a, b := twoReplicas(t, NewLocalBus(), 15*time.Second)
	s, _ := attach(t, b, "agent-1")
	go func() {
		d := <-s.Outbox()
		id := d.GetDirective().GetId()
		if s.Deliver(&livedumpv1.SelfTestReport{DirectiveId: id}) {
			t.Errorf("a self-test report answered a log directive")
		}
		s.Deliver(&livedumpv1.AgentLogReport{DirectiveId: id, FileName: "livedump-agent.log", Lines: []string{"from b"}})
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep, err := a.Exchange(ctx, "agent-1", &livedumpv1.Directive{Id: "log-1", Kind: &livedumpv1.Directive_AgentLog{AgentLog: &livedumpv1.AgentLogDirective{MaxLines: 10}}})
	if err != nil {
		t.Fatal(err)
	}
	lr, ok := rep.(*livedumpv1.AgentLogReport)
	if !ok || len(lr.GetLines()) != 1 || lr.GetLines()[0] != "from b" {
		t.Fatalf("report %T %v", rep, rep)
	}
}

func TestCallToAnAgentNoReplicaHoldsIsOfflineAtOnce(t *testing.T) {
	_, a, _ := twoReplicas(t, NewLocalBus(), 15*time.Second)
	start := time.Now()
	_, err := fleet.Call(context.Background(), a, "agent-9", &livedumpv1.Directive{Id: "prov-9"})
	if !errors.Is(err, ErrOffline) {
		t.Fatalf("err = %v, want ErrOffline", err)
	}
	if time.Since(start) > time.Second {
		t.Fatalf("ErrOffline took %s", time.Since(start))
	}
}

func TestPresenceEndsWithTheReplicasLease(t *testing.T) {
	const lease = 600 * time.Millisecond
	st, a, b := twoReplicas(t, NewLocalBus(), lease)
	attach(t, b, "agent-1")
	if !a.Online(context.Background(), "agent-1") {
		t.Fatal("agent on b not online as seen from a")
	}
	// b stops renewing its lease, as a crashed replica does: its presence
	// rows stay, but stop counting within the lease (a's view may be a
	// second old).
	b.stop()
	stopped := time.Now()
	for a.Online(context.Background(), "agent-1") {
		if time.Since(stopped) > lease+2*time.Second {
			t.Fatal("the agent of a replica whose lease ran out still shows online")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The agent reconnects to a, which takes its presence over.
	attach(t, a, "agent-1")
	p, err := st.Presence(context.Background(), time.Now().Add(-lease))
	if err != nil {
		t.Fatal(err)
	}
	if p["agent-1"] != "a" {
		t.Fatalf("presence %v, want agent-1 on a", p)
	}
	// b's stream ending late must not clear a's presence.
	if err := b.Detached(context.Background(), "agent-1", "session-agent-1"); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	a.snap = nil
	a.mu.Unlock()
	a.fleet.Detach(a.fleet.Session("agent-1")) // only the store can answer now
	if !a.Online(context.Background(), "agent-1") {
		t.Fatal("a stale detach on b took the agent offline")
	}
}

// A replica restarted under its fixed ID (replica.id) renews the same lease:
// the agents it held before the crash, which have not reconnected to it,
// must not show online again.
func TestRestartUnderAFixedIDRevivesNoPresence(t *testing.T) {
	const lease = 600 * time.Millisecond
	st, a, b := twoReplicas(t, NewLocalBus(), lease)
	attach(t, b, "agent-1")
	b.stop() // crash: the presence row stays
	again := New(Config{Store: st, Bus: NewLocalBus(), Fleet: fleet.NewRegistry(nil), ReplicaID: "b", Lease: lease,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := again.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	p, err := st.Presence(context.Background(), time.Now().Add(-lease))
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := p["agent-1"]; ok {
		t.Fatalf("agent-1 shows online on %q after b restarted without it", r)
	}
	a.mu.Lock()
	a.snap = nil
	a.mu.Unlock()
	if a.Online(context.Background(), "agent-1") {
		t.Fatal("a sees agent-1 online after b restarted without it")
	}
}

func TestRevocationEndsTheStreamOnEveryReplica(t *testing.T) {
	bus := NewLocalBus()
	_, a, b := twoReplicas(t, bus, 15*time.Second)
	_, ended := attach(t, b, "agent-1")
	for bus.listeners(ChanAgents) < 2 {
		time.Sleep(time.Millisecond)
	}
	a.Revoked(context.Background(), "agent-1")
	select {
	case <-ended.Done():
		if !errors.Is(context.Cause(ended), fleet.ErrRevoked) {
			t.Fatalf("stream ended with %v, want ErrRevoked", context.Cause(ended))
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the stream on b was not ended")
	}
}

// waitEnded waits for ctx to end with want.
func waitEnded(t *testing.T, ctx context.Context, want error, what string) {
	t.Helper()
	select {
	case <-ctx.Done():
		if !errors.Is(context.Cause(ctx), want) {
			t.Fatalf("%s ended with %v, want %v", what, context.Cause(ctx), want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s not ended within 5s", what)
	}
}

// Revocations made on one replica end the streams held on the other: an
// agent's upload, a revoked operator certificate's watch (by serial and by
// name), and a superseded agent certificate's stream at its grace end.
func TestRevocationsEndStreamsOnEveryReplica(t *testing.T) {
	_, a, b := twoReplicas(t, NewLocalBus(), time.Minute)
	issued := time.Now().Add(-time.Hour)
	open := func(o fleet.StreamOwner) context.Context {
		ctx, cancel := context.WithCancelCause(context.Background())
		t.Cleanup(func() { cancel(nil) })
		t.Cleanup(b.cfg.Streams.Register(o, cancel))
		return ctx
	}
	upload := open(fleet.StreamOwner{Identity: pki.AgentIdentity("aa"), Serial: "01", Issued: issued})
	old := open(fleet.StreamOwner{Identity: pki.AgentIdentity("bb"), Serial: "02", Issued: issued})
	current := open(fleet.StreamOwner{Identity: pki.AgentIdentity("bb"), Serial: "03", Issued: issued})
	watch := open(fleet.StreamOwner{Identity: pki.OperatorIdentity(pki.RoleViewer, "mallory"), Serial: "04", Issued: issued})
	byName := open(fleet.StreamOwner{Identity: pki.OperatorIdentity(pki.RoleAdmin, "eve"), Serial: "05", Issued: issued})
	other := open(fleet.StreamOwner{Identity: pki.OperatorIdentity(pki.RoleAdmin, "oscar"), Serial: "06", Issued: issued})
	// Wait for b to listen.
	for a.cfg.Bus.(*LocalBus).listeners(ChanCerts) < 2 {
		time.Sleep(5 * time.Millisecond)
	}

	ctx := context.Background()
	a.Revoked(ctx, "aa")
	waitEnded(t, upload, fleet.ErrRevoked, "the revoked agent's upload")
	a.OperatorCertRevoked(ctx, "04")
	waitEnded(t, watch, fleet.ErrCertRevoked, "the revoked certificate's watch")
	a.OperatorNameRevoked(ctx, "eve", time.Now())
	waitEnded(t, byName, fleet.ErrCertRevoked, "the revoked operator's stream")
	a.Superseded(ctx, "bb", "02", time.Now().Add(200*time.Millisecond))
	if old.Err() != nil {
		t.Fatal("a superseded certificate's stream ended before its grace window")
	}
	waitEnded(t, old, fleet.ErrCertSuperseded, "the superseded certificate's stream")
	time.Sleep(100 * time.Millisecond)
	if current.Err() != nil || other.Err() != nil {
		t.Fatalf("streams of the current certificate (%v) or another operator (%v) ended", context.Cause(current), context.Cause(other))
	}
}

// TestSubscribeCapturesHearsTheReplicas: a subscriber hears every replica's
// capture changes (its own too) and the events other replicas stored, not
// its own; the cluster itself holds nothing of the subscriber's.
func TestSubscribeCapturesHearsTheReplicas(t *testing.T) {
	bus := NewLocalBus()
	_, a, b := twoReplicas(t, bus, 15*time.Second)
	notices := b.SubscribeCaptures()
	for bus.listeners(ChanCaptures) < 2 || bus.listeners(ChanEvents) < 2 {
		time.Sleep(time.Millisecond)
	}
	next := func() CaptureNotice {
		t.Helper()
		select {
		case n := <-notices:
			return n
		case <-time.After(3 * time.Second):
			t.Fatal("no capture notice")
			return CaptureNotice{}
		}
	}
	ctx := context.Background()
	a.CaptureChanged(ctx, "c-1")
	if n := next(); n != (CaptureNotice{CaptureID: "c-1"}) {
		t.Fatalf("notice %+v", n)
	}
	a.EventsStored(ctx, "c-1")
	if n := next(); n != (CaptureNotice{CaptureID: "c-1", Events: true}) {
		t.Fatalf("notice %+v", n)
	}
	b.EventsStored(ctx, "c-2") // its own: not a notice
	b.CaptureChanged(ctx, "c-3")
	if n := next(); n != (CaptureNotice{CaptureID: "c-3"}) {
		t.Fatalf("notice %+v, want c-3 changed and nothing of b's own events", n)
	}
}
