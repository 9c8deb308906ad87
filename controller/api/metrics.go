package api

import "github.com/prometheus/client_golang/prometheus"

// Result label values of the enrollment and renewal counters.
const (
	resultOK      = "ok"
	resultDenied  = "denied"
	resultInvalid = "invalid"
	resultError   = "error"
)

// Metrics are the controller's own metrics for the agent-facing API.
type Metrics struct {
	AgentsConnected prometheus.Gauge
	Enrollments     *prometheus.CounterVec
	Renewals        *prometheus.CounterVec
	Heartbeats      prometheus.Counter
	Disconnects     *prometheus.CounterVec
	// EnrollRateLimited counts Enroll calls refused by the per-source
	// rate limit.
	EnrollRateLimited prometheus.Counter
	// SelfTestReportsRefused counts self-test reports dropped: over the
	// limits, or answering no self-test directive the agent was sent.
	SelfTestReportsRefused prometheus.Counter
	// AgentLogReportsRefused counts log tails from agents dropped: over
	// the limits, or answering no log directive the agent was sent.
	AgentLogReportsRefused prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		AgentsConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "livedump_controller_agents_connected",
			Help: "Agents with a Connect stream attached to this controller.",
		}),
		Enrollments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livedump_controller_enrollments_total",
			Help: "Enroll calls by result (ok, denied, invalid, error).",
		}, []string{"result"}),
		Renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livedump_controller_certificate_renewals_total",
			Help: "Renew calls by result (ok, denied, invalid, error).",
		}, []string{"result"}),
		Heartbeats: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livedump_controller_heartbeats_total",
			Help: "Heartbeats received from agents.",
		}),
		Disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livedump_controller_agent_disconnects_total",
			Help: "Agent streams ended, by reason (closed, replaced, revoked, heartbeat_timeout, certificate_expired, shutdown, error).",
		}, []string{"reason"}),
		EnrollRateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livedump_controller_enroll_rate_limited_total",
			Help: "Enroll calls refused by the per-source rate limit.",
		}),
		SelfTestReportsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livedump_controller_selftest_reports_refused_total",
			Help: "Self-test reports from agents dropped: over the size limits, or answering no self-test directive sent to that agent.",
		}),
		AgentLogReportsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livedump_controller_agent_log_reports_refused_total",
			Help: "Log tails from agents (agents describe) dropped: over 200 lines or 64 KiB, or answering no log directive sent to that agent.",
		}),
	}
	for _, r := range []string{resultOK, resultDenied, resultInvalid, resultError} {
		m.Enrollments.WithLabelValues(r)
		m.Renewals.WithLabelValues(r)
	}
	for _, r := range []string{"closed", "replaced", "revoked", "heartbeat_timeout", "certificate_expired", "shutdown", "store_unavailable", "slow_consumer", "error"} {
		m.Disconnects.WithLabelValues(r)
	}
	reg.MustRegister(m.AgentsConnected, m.Enrollments, m.Renewals, m.Heartbeats, m.Disconnects, m.EnrollRateLimited, m.SelfTestReportsRefused, m.AgentLogReportsRefused)
	return m
}
