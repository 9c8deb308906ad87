package capture

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/livedump/livedump/controller/store"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

// refusalWindow is how long refusals of one agent are summed into one audit
// entry and one log line.
const refusalWindow = time.Minute

// maxRefusalCaptures bounds the capture IDs named in one audit summary.
const maxRefusalCaptures = 16

// refusalLog is the record of refused events: a metric by reason, and a
// log line and an audit entry for the first refusal of an agent, then one
// summary per window.
type refusalLog struct {
	store   auditStore
	clock   clockwork.Clock
	log     *slog.Logger
	refused *prometheus.CounterVec

	mu sync.Mutex
	// byAgent sums each agent's refused events for the audit log.
	byAgent map[string]*refusals
}

// auditStore is where refusals are audited.
type auditStore interface {
	AppendAudit(ctx context.Context, e store.AuditEntry) (int64, error)
}

func newRefusalLog(st auditStore, clock clockwork.Clock, log *slog.Logger, reg prometheus.Registerer) *refusalLog {
	l := &refusalLog{
		store: st, clock: clock, log: log, byAgent: map[string]*refusals{},
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "livedump_controller_events_refused_total",
			Help: "Trigger events refused, by reason (capture_unknown, capture_not_active, not_target, invalid, too_large, rate_limited)."}, []string{"reason"}),
	}
	if reg != nil {
		for _, r := range refusalReasons {
			l.refused.WithLabelValues(r)
		}
		reg.MustRegister(l.refused)
	}
	return l
}

// refusals sums one agent's refused events over a window: the first is
// logged and audited at once, the rest in one summary when the window ends,
// so a flood costs one audit row and one log line a minute, not one each.
type refusals struct {
	start    time.Time
	total    int // after the first
	reasons  map[string]int
	captures map[string]int
	other    int // refusals for captures beyond maxRefusalCaptures
}

// refuse counts, logs and audits a refused event.
func (l *refusalLog) refuse(agentID, captureID string, r *refusal) {
	l.refused.WithLabelValues(r.reason).Inc()
	now := l.clock.Now()
	l.mu.Lock()
	w := l.byAgent[agentID]
	if w != nil {
		w.total++
		w.reasons[r.reason]++
		if _, ok := w.captures[captureID]; ok || len(w.captures) < maxRefusalCaptures {
			w.captures[captureID]++
		} else {
			w.other++
		}
		l.mu.Unlock()
		return
	}
	l.byAgent[agentID] = &refusals{start: now, reasons: map[string]int{}, captures: map[string]int{}}
	l.mu.Unlock()
	l.log.Warn("event refused", "agent_id", agentID, "capture_id", captureID, "reason", r.reason, "detail", r.detail,
		"note", "further refusals of this agent in the next "+refusalWindow.String()+" are summed")
	l.audit(agentID, captureID, "refused: "+truncate(r.String(), 512), "")
}

// flush writes the summaries of windows that have ended (all of
// them when final).
func (l *refusalLog) flush(final bool) {
	now := l.clock.Now()
	type summary struct {
		agent string
		w     *refusals
	}
	var done []summary
	l.mu.Lock()
	for id, w := range l.byAgent {
		if final || now.Sub(w.start) >= refusalWindow {
			delete(l.byAgent, id)
			if w.total > 0 {
				done = append(done, summary{id, w})
			}
		}
	}
	l.mu.Unlock()
	for _, s := range done {
		var parts []string
		for _, r := range refusalReasons {
			if n := s.w.reasons[r]; n > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", r, n))
			}
		}
		target := ""
		if len(s.w.captures) == 1 && s.w.other == 0 {
			for c := range s.w.captures {
				target = c
			}
		}
		details, _ := json.Marshal(map[string]any{"reasons": s.w.reasons, "captures": s.w.captures, "other_captures": s.w.other})
		outcome := fmt.Sprintf("refused: %d more events in %s (%s)", s.w.total, now.Sub(s.w.start).Round(time.Second), strings.Join(parts, ", "))
		l.log.Warn("events refused", "agent_id", s.agent, "count", s.w.total, "reasons", strings.Join(parts, ", "))
		l.audit(s.agent, target, outcome, string(details))
	}
}

// audit writes one entry about an agent's events. A failure is logged: the
// refusal itself stands.
func (l *refusalLog) audit(agentID, captureID, outcome, details string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e := store.AuditEntry{Time: l.clock.Now().UTC(), Actor: "agent/" + agentID, Action: "AgentService/Connect/TriggerEvent", Target: captureID, Outcome: outcome, Details: details}
	if _, err := l.store.AppendAudit(ctx, e); err != nil {
		l.log.Error("audit write failed", "action", e.Action, "actor", e.Actor, "err", err)
	}
}

// refusalAck is the acknowledgement of a refused event: the agent drops it
// from its spool (sending it again would not change the answer) and learns
// why.
func refusalAck(eventID string, r *refusal) *livedumpv1.EventRefusal {
	return &livedumpv1.EventRefusal{EventId: eventID, Reason: truncate(r.String(), 1024)}
}
