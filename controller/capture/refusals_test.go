package capture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/livedump/livedump/controller/store"
)

// fakeAudit keeps audit entries in memory.
type fakeAudit struct {
	entries []store.AuditEntry
	err     error
}

func (a *fakeAudit) AppendAudit(_ context.Context, e store.AuditEntry) (int64, error) {
	if a.err != nil {
		return 0, a.err
	}
	a.entries = append(a.entries, e)
	return int64(len(a.entries)), nil
}

// TestRefusalLogSumsAWindow: an agent's first refusal is audited at once,
// the rest of the window in one summary naming the reasons and captures;
// each agent has its own window; a final flush writes what is open.
func TestRefusalLogSumsAWindow(t *testing.T) {
	audit := &fakeAudit{}
	clock := newFakeClock()
	l := newRefusalLog(audit, clock, discard(), prometheus.NewRegistry())
	l.refuse("a", "c-1", &refusal{RefusedNotTarget, "x"})
	for i := range 20 {
		l.refuse("a", fmt.Sprintf("c-%d", i), &refusal{RefusedCaptureUnknown, "y"})
	}
	l.refuse("b", "c-1", &refusal{RefusedTooLarge, "z"})
	l.refuse("b", "c-1", &refusal{RefusedTooLarge, "z"})
	if len(audit.entries) != 2 || audit.entries[0].Actor != "agent/a" || audit.entries[0].Outcome != "refused: not_target: x" || audit.entries[0].Target != "c-1" {
		t.Fatalf("first entries %+v", audit.entries)
	}
	if n := testutil.ToFloat64(l.refused.WithLabelValues(RefusedCaptureUnknown)); n != 20 {
		t.Fatalf("refused{capture_unknown} = %v", n)
	}

	l.flush(false)
	if len(audit.entries) != 2 {
		t.Fatal("summary written within the window")
	}
	clock.Advance(refusalWindow)
	l.flush(false)
	if len(audit.entries) != 4 {
		t.Fatalf("%d entries after the window, want 4", len(audit.entries))
	}
	var sumA store.AuditEntry
	for _, e := range audit.entries[2:] {
		if e.Actor == "agent/a" {
			sumA = e
		}
	}
	if !strings.Contains(sumA.Outcome, "refused: 20 more events in 1m0s (capture_unknown 20)") || sumA.Target != "" {
		t.Fatalf("a's summary %+v", sumA)
	}
	var details struct {
		Captures map[string]int `json:"captures"`
		Other    int            `json:"other_captures"`
	}
	if err := json.Unmarshal([]byte(sumA.Details), &details); err != nil || len(details.Captures) != maxRefusalCaptures || details.Other != 20-maxRefusalCaptures {
		t.Fatalf("details %s (%v)", sumA.Details, err)
	}

	// A window with only its first refusal has nothing to sum.
	l.refuse("a", "c-1", &refusal{RefusedNotTarget, "x"})
	l.flush(true)
	if len(audit.entries) != 5 {
		t.Fatalf("%d entries, want 5", len(audit.entries))
	}
}

// TestRefusalLogAuditFailure: an audit that cannot be written is logged;
// the refusal stands and is counted.
func TestRefusalLogAuditFailure(t *testing.T) {
	l := newRefusalLog(&fakeAudit{err: errors.New("store down")}, newFakeClock(), discard(), nil)
	l.refuse("a", "c-1", &refusal{RefusedInvalid, "x"})
	if n := testutil.ToFloat64(l.refused.WithLabelValues(RefusedInvalid)); n != 1 {
		t.Fatalf("refused{invalid} = %v", n)
	}
}

// fakeAdmissionStore knows one ended capture and fails for "c-broken".
type fakeAdmissionStore struct{ reads int }

func (s *fakeAdmissionStore) GetCapture(_ context.Context, id string) (store.Capture, error) {
	s.reads++
	switch id {
	case "c-ended":
		return store.Capture{ID: id, State: StateDone, Spec: `{"selector":"x","perAgentCap":1}`}, nil
	case "c-broken":
		return store.Capture{}, errors.New("store down")
	}
	return store.Capture{}, store.ErrNotFound
}

func (s *fakeAdmissionStore) ListTargets(_ context.Context, id string) ([]store.CaptureTarget, error) {
	return []store.CaptureTarget{{CaptureID: id, AgentID: "a", State: TargetCancelled, Updated: t0}}, nil
}

// TestAdmissionCheck: the active captures of the last pass admit their
// targets' events; a capture not known is read once and remembered; a
// failed read is not.
func TestAdmissionCheck(t *testing.T) {
	ctx := context.Background()
	st := &fakeAdmissionStore{}
	a := newAdmission()
	a.refresh(map[string]map[string]struct{}{"c-live": {"a": {}}})
	now := t0.Add(LateEventGrace / 2)
	check := func(captureID, agentID string) (reason string, known bool) {
		r, known := a.check(captureID, agentID, now)
		if r != nil {
			reason = r.reason
		}
		return reason, known
	}
	if r, known := check("c-live", "a"); r != "" || !known {
		t.Fatalf("target of an active capture: %q %v", r, known)
	}
	if r, _ := check("c-live", "b"); r != RefusedNotTarget {
		t.Fatalf("not a target: %q", r)
	}
	for _, id := range []string{"c-ended", "c-none"} {
		if _, known := check(id, "a"); known {
			t.Fatalf("%s known before a read", id)
		}
		if err := a.load(ctx, st, id, now); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.load(ctx, st, "c-broken", now); err == nil {
		t.Fatal("a failed read loaded")
	}
	for _, tc := range []struct{ capture, agent, reason string }{
		{"c-ended", "a", ""}, // late, within the grace and the per-agent cap of 1
		{"c-ended", "a", RefusedCaptureNotActive},
		{"c-ended", "b", RefusedCaptureNotActive},
		{"c-none", "a", RefusedCaptureUnknown},
	} {
		if r, known := check(tc.capture, tc.agent); !known || r != tc.reason {
			t.Errorf("%s from %s: %q %v, want %q", tc.capture, tc.agent, r, known, tc.reason)
		}
	}
	if _, known := check("c-broken", "a"); known {
		t.Fatal("a failed read was remembered")
	}
	a.ended("c-live")
	if _, known := check("c-live", "a"); known {
		t.Fatal("an ended capture is still admitted from memory")
	}
}
