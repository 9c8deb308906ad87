package capture

import (
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// refusalReasons are the reason words the controller sends with a refused
// event. Any other word counts as "other", so the metric's label stays
// bounded whatever a controller says.
var refusalReasons = []string{"capture_unknown", "capture_not_active", "not_target", "invalid", "too_large", "rate_limited"}

// maxRefusalKeys bounds the (capture, reason) pairs remembered as logged;
// past it the memory starts over, so a pair may be logged again, rarely.
const maxRefusalKeys = 256

// maxRefusalDetail bounds the controller's detail in the log line.
const maxRefusalDetail = 512

// refusals logs the controller's refusals once per capture and reason, and
// counts every one.
type refusals struct {
	total *prometheus.CounterVec

	mu     sync.Mutex
	logged map[string]bool // capture ID + "\x00" + reason
}

func (r *refusals) init() {
	r.total = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "livedump_agent_events_refused_total",
		Help: "Trigger events the controller refused, by reason (other: a reason this agent does not know)."}, []string{"reason"})
	for _, w := range append(slices.Clone(refusalReasons), "other") {
		r.total.WithLabelValues(w)
	}
	r.logged = map[string]bool{}
}

// Refused records why the controller refused events: each is counted, and
// logged once per capture and reason (a burst of refused events of one
// capture is one line, not one per event). It runs before the same events
// are acked, while the spool still holds them and so names their capture.
func (m *Manager) Refused(rs []*livedumpv1.EventRefusal) {
	for _, rf := range rs {
		word, detail, _ := strings.Cut(rf.GetReason(), ": ")
		if !slices.Contains(refusalReasons, word) {
			word = "other"
		}
		m.refusals.total.WithLabelValues(word).Inc()
		captureID := m.spooledCapture(rf.GetEventId())
		key := captureID + "\x00" + word
		m.refusals.mu.Lock()
		seen := m.refusals.logged[key]
		if !seen {
			if len(m.refusals.logged) >= maxRefusalKeys {
				clear(m.refusals.logged)
			}
			m.refusals.logged[key] = true
		}
		m.refusals.mu.Unlock()
		if seen {
			continue
		}
		if len(detail) > maxRefusalDetail {
			detail = detail[:maxRefusalDetail] + "..."
		}
		m.log.Warn("controller refused trigger events", "capture_id", captureID, "reason", word, "detail", detail,
			"event_id", rf.GetEventId(), "note", "logged once per capture and reason; livedump_agent_events_refused_total counts them all")
	}
}

// spooledCapture is the capture of a spooled event, or "" when the event is
// no longer spooled.
func (m *Manager) spooledCapture(eventID string) string {
	b, ok := m.spool.Get(eventID)
	if !ok {
		return ""
	}
	ev := &livedumpv1.TriggerEvent{}
	if err := proto.Unmarshal(b, ev); err != nil {
		return ""
	}
	return ev.GetCaptureId()
}
