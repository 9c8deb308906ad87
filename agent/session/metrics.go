package session

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the agent's connection metrics.
type Metrics struct {
	Connected   prometheus.Gauge
	Reconnects  prometheus.Counter
	Enrollments *prometheus.CounterVec
	Renewals    *prometheus.CounterVec
	CertExpiry  prometheus.Gauge
	Heartbeats  prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "livedump_agent_connected",
			Help: "1 while the agent's Connect stream to a controller is up, else 0.",
		}),
		Reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livedump_agent_reconnects_total",
			Help: "Connection attempts after the first, successful or not.",
		}),
		Enrollments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livedump_agent_enrollments_total",
			Help: "Enrollment attempts by result (ok, denied, error).",
		}, []string{"result"}),
		Renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livedump_agent_certificate_renewals_total",
			Help: "Certificate renewal attempts by result (ok, error).",
		}, []string{"result"}),
		CertExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "livedump_agent_certificate_expiry_timestamp_seconds",
			Help: "Unix time at which the agent's client certificate expires.",
		}),
		Heartbeats: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livedump_agent_heartbeats_sent_total",
			Help: "Heartbeats sent to the controller.",
		}),
	}
	for _, r := range []string{"ok", "denied", "error"} {
		m.Enrollments.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "error"} {
		m.Renewals.WithLabelValues(r)
	}
	reg.MustRegister(m.Connected, m.Reconnects, m.Enrollments, m.Renewals, m.CertExpiry, m.Heartbeats)
	return m
}
