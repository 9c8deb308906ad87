package capture

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
	"github.com/livedump/livedump/sim"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRefusedEventsAreLoggedOncePerCaptureAndReason: a burst of refusals
// is one log line per capture and reason, every refusal is counted by
// reason, and a reason word the agent does not know counts as other.
func TestRefusedEventsAreLoggedOncePerCaptureAndReason(t *testing.T) {
	dir := t.TempDir()
	h, err := sim.New(sim.Config{StateDir: filepath.Join(dir, "host")})
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	reg := prometheus.NewRegistry()
	m, err := New(Config{Host: h, StateDir: filepath.Join(dir, "agent"), AgentID: func() string { return "0123456789abcdef" },
		Sender: &recorder{}, Metrics: reg, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	var refused []*livedumpv1.EventRefusal
	var ids []string
	for i := range 100 {
		capID := "c-one"
		if i%2 == 1 {
			capID = "c-two"
		}
		id := EventID("0123456789abcdef", capID, i, time.Unix(1700000000, 0), 1, 1)
		b, _ := proto.Marshal(&livedumpv1.TriggerEvent{Id: id, CaptureId: capID})
		if err := m.spool.Put(id, b); err != nil {
			t.Fatal(err)
		}
		reason := "capture_not_active: capture " + capID + " ended"
		if i >= 90 {
			reason = "rate_limited: more than 50 events/s"
		}
		if i == 99 {
			reason = "new_reason\nforged line: " + strings.Repeat("x", 5000)
		}
		refused = append(refused, &livedumpv1.EventRefusal{EventId: id, Reason: reason})
		ids = append(ids, id)
	}
	// As the session delivers an ack: refusals, then the IDs to drop.
	m.Refused(refused[:50])
	m.Refused(refused[50:])
	// Later refusals of the same capture and reason are counted, not logged.
	m.Refused(refused[:1])
	m.Acked(ids)
	if m.spool.Len() != 0 {
		t.Fatalf("%d refused events stay spooled", m.spool.Len())
	}

	out := logs.String()
	lines := strings.Count(out, "controller refused trigger events")
	// c-one and c-two x capture_not_active, x rate_limited; c-two other.
	if lines != 5 {
		t.Fatalf("%d log lines, want 5:\n%s", lines, out)
	}
	if !strings.Contains(out, "capture_id=c-two reason=other") || strings.Contains(out, strings.Repeat("x", 600)) {
		t.Fatalf("the unknown reason is not logged as other, or its detail is not cut:\n%.2000s", out)
	}
	for reason, want := range map[string]float64{"capture_not_active": 91, "rate_limited": 9, "other": 1, "invalid": 0} {
		if got := testutil.ToFloat64(m.refusals.total.WithLabelValues(reason)); got != want {
			t.Errorf("livedump_agent_events_refused_total{reason=%q} = %v, want %v", reason, got, want)
		}
	}
}
