package fleet

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/livedump/livedump/internal/pki"
)

func TestStreamsEnd(t *testing.T) {
	issued := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	owners := map[string]StreamOwner{
		"agent-a-old": {Identity: pki.AgentIdentity("aa"), Serial: "01", Issued: issued},
		"agent-a-new": {Identity: pki.AgentIdentity("aa"), Serial: "02", Issued: issued.Add(time.Hour)},
		"agent-b":     {Identity: pki.AgentIdentity("bb"), Serial: "03", Issued: issued},
		"alice-old":   {Identity: pki.OperatorIdentity(pki.RoleAdmin, "alice"), Serial: "04", Issued: issued},
		"alice-new":   {Identity: pki.OperatorIdentity(pki.RoleViewer, "alice"), Serial: "05", Issued: issued.Add(2 * time.Hour)},
		"alicia":      {Identity: pki.OperatorIdentity(pki.RoleAdmin, "alicia"), Serial: "06", Issued: issued},
	}
	for _, tc := range []struct {
		name string
		end  func(s *Streams) int
		want []string
	}{
		{"agent", func(s *Streams) int { return s.EndAgent("aa", ErrRevoked) }, []string{"agent-a-old", "agent-a-new"}},
		{"agent serial", func(s *Streams) int { return s.EndAgentSerial("aa", "01", ErrCertSuperseded) }, []string{"agent-a-old"}},
		{"serial", func(s *Streams) int { return s.EndSerial("04", ErrCertRevoked) }, []string{"alice-old"}},
		{"operator name", func(s *Streams) int {
			return s.EndOperatorName("alice", issued.Add(time.Hour), ErrCertRevoked)
		}, []string{"alice-old"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStreams()
			ctxs := map[string]context.Context{}
			for name, o := range owners {
				ctx, cancel := context.WithCancelCause(context.Background())
				ctxs[name] = ctx
				defer s.Register(o, cancel)()
			}
			if n := tc.end(s); n != len(tc.want) {
				t.Errorf("ended %d streams, want %d", n, len(tc.want))
			}
			for name, ctx := range ctxs {
				want := false
				for _, w := range tc.want {
					want = want || w == name
				}
				if got := ctx.Err() != nil; got != want {
					t.Errorf("stream %s ended = %v, want %v", name, got, want)
				}
				if want && context.Cause(ctx) == nil {
					t.Errorf("stream %s ended without a cause", name)
				}
			}
		})
	}
}

// A stream authorized just before a revocation registers just after it: it
// is ended at once, for a minute.
func TestStreamsRegisterAfterEnd(t *testing.T) {
	s := NewStreams()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	s.EndAgent("aa", ErrRevoked)
	ctx, cancel := context.WithCancelCause(context.Background())
	release := s.Register(StreamOwner{Identity: pki.AgentIdentity("aa"), Serial: "01"}, cancel)
	if !errors.Is(context.Cause(ctx), ErrRevoked) {
		t.Fatalf("late stream of a revoked agent: cause %v, want ErrRevoked", context.Cause(ctx))
	}
	release()
	other, cancelOther := context.WithCancelCause(context.Background())
	defer s.Register(StreamOwner{Identity: pki.AgentIdentity("bb"), Serial: "02"}, cancelOther)()
	if other.Err() != nil {
		t.Fatal("another agent's stream ended")
	}
	if s.Len() != 1 {
		t.Fatalf("Len = %d after release, want 1", s.Len())
	}
	// After a minute the memory is gone (a new End prunes it).
	now = now.Add(2 * time.Minute)
	s.EndAgent("zz", ErrRevoked)
	later, cancelLater := context.WithCancelCause(context.Background())
	defer s.Register(StreamOwner{Identity: pki.AgentIdentity("aa"), Serial: "03"}, cancelLater)()
	if later.Err() != nil {
		t.Fatal("a stream registered long after the revocation was ended by it")
	}
}
