package fleet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// gaugeValue reads a gauge the way prometheus/testutil.ToFloat64 does.
// testutil itself cannot be imported here: it depends on
// github.com/kylelemons/godebug, which go.mod does not list, so importing it
// would need a go.mod change.
func gaugeValue(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatalf("read gauge: %v", err)
	}
	return m.GetGauge().GetValue()
}

func newGauge() prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{Name: "test_connected_agents", Help: "test"})
}

type stream struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

func newStream(t *testing.T) stream {
	ctx, cancel := context.WithCancelCause(context.Background())
	t.Cleanup(func() { cancel(nil) })
	return stream{ctx, cancel}
}

func wantLive(t *testing.T, s stream, what string) {
	t.Helper()
	if err := s.ctx.Err(); err != nil {
		t.Errorf("%s: cancelled (%v), want live", what, context.Cause(s.ctx))
	}
}

func wantCause(t *testing.T, s stream, cause error, what string) {
	t.Helper()
	if s.ctx.Err() == nil {
		t.Errorf("%s: still live, want cancelled with %v", what, cause)
		return
	}
	if got := context.Cause(s.ctx); !errors.Is(got, cause) {
		t.Errorf("%s: cause = %v, want %v", what, got, cause)
	}
}

func wantCount(t *testing.T, r *Registry, g prometheus.Gauge, n int) {
	t.Helper()
	if got := r.Len(); got != n {
		t.Errorf("Len() = %d, want %d", got, n)
	}
	if got := gaugeValue(t, g); got != float64(n) {
		t.Errorf("connected gauge = %v, want %d", got, n)
	}
}

func TestAttachDetach(t *testing.T) {
	g := newGauge()
	r := NewRegistry(g)
	wantCount(t, r, g, 0)
	if r.Online("a") {
		t.Error("empty registry reports a online")
	}
	if _, ok := r.LastHeartbeat("a"); ok {
		t.Error("LastHeartbeat of unknown agent reports ok")
	}

	sa, sb := newStream(t), newStream(t)
	a := r.Attach("a", t0, sa.cancel)
	if a.AgentID != "a" {
		t.Errorf("AgentID = %q", a.AgentID)
	}
	if !a.LastHeartbeat().Equal(t0) {
		t.Errorf("initial heartbeat = %v, want attach time %v", a.LastHeartbeat(), t0)
	}
	wantCount(t, r, g, 1)
	b := r.Attach("b", t0, sb.cancel)
	wantCount(t, r, g, 2)
	if !r.Online("a") || !r.Online("b") || r.Online("c") {
		t.Error("Online wrong after two attaches")
	}

	b.Heartbeat(t0.Add(time.Minute))
	if hb, ok := r.LastHeartbeat("b"); !ok || !hb.Equal(t0.Add(time.Minute)) {
		t.Errorf("LastHeartbeat(b) = %v, %v", hb, ok)
	}
	if hb, ok := r.LastHeartbeat("a"); !ok || !hb.Equal(t0) {
		t.Errorf("LastHeartbeat(a) = %v, %v (heartbeats leaked between sessions?)", hb, ok)
	}

	r.Detach(a)
	wantCount(t, r, g, 1)
	if r.Online("a") || !r.Online("b") {
		t.Error("Online wrong after detaching a")
	}
	wantLive(t, sa, "detached session") // Detach only forgets; the handler is returning anyway
	r.Detach(a)                         // idempotent
	wantCount(t, r, g, 1)
	r.Detach(b)
	wantCount(t, r, g, 0)
	wantLive(t, sb, "b")
}

func TestAttachReplaces(t *testing.T) {
	g := newGauge()
	r := NewRegistry(g)
	s1, s2, s3 := newStream(t), newStream(t), newStream(t)

	old := r.Attach("a", t0, s1.cancel)
	cur := r.Attach("a", t0.Add(time.Second), s2.cancel)
	if old == cur {
		t.Fatal("second Attach returned the same session")
	}
	wantCause(t, s1, ErrReplaced, "replaced session")
	wantLive(t, s2, "new session")
	wantCount(t, r, g, 1)
	if hb, _ := r.LastHeartbeat("a"); !hb.Equal(t0.Add(time.Second)) {
		t.Errorf("LastHeartbeat = %v, want the new session's", hb)
	}

	// The old stream's handler returns and detaches: the new session stays.
	r.Detach(old)
	if !r.Online("a") {
		t.Fatal("Detach of the replaced session removed the new one")
	}
	wantCount(t, r, g, 1)
	// Heartbeats the old handler might still record do not reach the new session.
	old.Heartbeat(t0.Add(time.Hour))
	if hb, _ := r.LastHeartbeat("a"); !hb.Equal(t0.Add(time.Second)) {
		t.Errorf("LastHeartbeat = %v after old session heartbeat", hb)
	}

	// A third connection replaces the second; other agents are untouched.
	other := newStream(t)
	r.Attach("b", t0, other.cancel)
	r.Attach("a", t0, s3.cancel)
	wantCause(t, s2, ErrReplaced, "second session")
	wantLive(t, s3, "third session")
	wantLive(t, other, "other agent")
	wantCount(t, r, g, 2)
}

func TestDisconnect(t *testing.T) {
	g := newGauge()
	r := NewRegistry(g)
	sa, sb := newStream(t), newStream(t)
	a := r.Attach("a", t0, sa.cancel)
	r.Attach("b", t0, sb.cancel)

	if r.Disconnect("nobody", ErrRevoked) {
		t.Error("Disconnect of unknown agent returned true")
	}
	if !r.Disconnect("a", ErrRevoked) {
		t.Fatal("Disconnect(a) returned false")
	}
	wantCause(t, sa, ErrRevoked, "a")
	wantLive(t, sb, "b")
	// The handler detaches when its stream ends; until then a is attached.
	if !r.Online("a") {
		t.Error("Disconnect removed the session itself")
	}
	r.Detach(a)
	wantCount(t, r, g, 1)
	if r.Disconnect("a", ErrRevoked) {
		t.Error("Disconnect after Detach returned true")
	}

	custom := fmt.Errorf("wrapped: %w", ErrShutdown)
	r.Disconnect("b", custom)
	if got := context.Cause(sb.ctx); got != custom {
		t.Errorf("cause = %v, want exactly the error passed", got)
	}
}

func TestExpireStale(t *testing.T) {
	const timeout = 90 * time.Second
	now := t0.Add(time.Hour)
	g := newGauge()
	r := NewRegistry(g)
	tests := []struct {
		agent string
		last  time.Time
		stale bool
	}{
		{"fresh", now.Add(-time.Second), false},
		{"recent", now.Add(-timeout + time.Second), false},
		{"exactly timeout", now.Add(-timeout), false}, // strictly older is stale
		{"just over", now.Add(-timeout - time.Millisecond), true},
		{"ancient", t0, true},
		{"future", now.Add(time.Minute), false},
	}
	streams := map[string]stream{}
	for _, tt := range tests {
		s := newStream(t)
		streams[tt.agent] = s
		// Attach long ago, then heartbeat: the heartbeat is what counts.
		r.Attach(tt.agent, t0, s.cancel).Heartbeat(tt.last)
	}
	wantStale := 0
	for _, tt := range tests {
		if tt.stale {
			wantStale++
		}
	}
	if n := r.ExpireStale(now, timeout); n != wantStale {
		t.Errorf("ExpireStale = %d, want %d", n, wantStale)
	}
	for _, tt := range tests {
		if tt.stale {
			wantCause(t, streams[tt.agent], ErrHeartbeatTimeout, tt.agent)
		} else {
			wantLive(t, streams[tt.agent], tt.agent)
		}
	}
	// Expiring does not detach: the handlers do.
	wantCount(t, r, g, len(tests))

	if n := r.ExpireStale(now, 24*time.Hour); n != 0 {
		t.Errorf("ExpireStale with a long timeout = %d, want 0", n)
	}
	if n := NewRegistry(nil).ExpireStale(now, timeout); n != 0 {
		t.Errorf("ExpireStale on empty registry = %d", n)
	}
}

func TestCloseAll(t *testing.T) {
	g := newGauge()
	r := NewRegistry(g)
	var streams []stream
	for i := range 5 {
		s := newStream(t)
		streams = append(streams, s)
		r.Attach(fmt.Sprintf("agent-%d", i), t0, s.cancel)
	}
	r.CloseAll(ErrShutdown)
	for i, s := range streams {
		wantCause(t, s, ErrShutdown, fmt.Sprintf("agent-%d", i))
	}
	wantCount(t, r, g, 5)                  // still attached until the handlers detach
	NewRegistry(nil).CloseAll(ErrShutdown) // empty: no panic
}

func TestNilGauge(t *testing.T) {
	r := NewRegistry(nil)
	s := newStream(t)
	sess := r.Attach("a", t0, s.cancel)
	r.Attach("a", t0, newStream(t).cancel)
	r.Detach(sess)
	if r.Len() != 1 {
		t.Errorf("Len = %d, want 1", r.Len())
	}
}

// TestConcurrent exercises every method at once; run with -race.
func TestConcurrent(t *testing.T) {
	g := newGauge()
	r := NewRegistry(g)
	const workers, rounds = 8, 200
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				id := fmt.Sprintf("agent-%d", (w+i)%5) // agents shared between workers
				_, cancel := context.WithCancelCause(context.Background())
				s := r.Attach(id, t0, cancel)
				s.Heartbeat(t0.Add(time.Duration(i) * time.Second))
				r.Online(id)
				r.LastHeartbeat(id)
				r.Len()
				switch i % 4 {
				case 0:
					r.ExpireStale(t0.Add(100*time.Second), 50*time.Second)
				case 1:
					r.Disconnect(id, ErrRevoked)
				case 2:
					r.CloseAll(ErrShutdown)
				}
				r.Detach(s)
				cancel(nil)
			}
		}()
	}
	wg.Wait()
	wantCount(t, r, g, 0)
}
