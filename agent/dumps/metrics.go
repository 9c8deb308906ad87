package dumps

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Results counted by livedump_agent_dumps_total.
const (
	resultUploaded  = "uploaded"
	resultHashOnly  = "hash_only"
	resultAborted   = "aborted"
	resultTruncated = "truncated"
	resultFailed    = "failed"
)

type metrics struct {
	dumps      *prometheus.CounterVec
	raw        prometheus.Counter
	compressed prometheus.Counter
	seconds    prometheus.Histogram
	resumes    prometheus.Counter
	noDump     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		dumps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livedump_agent_dumps_total",
			Help: "Live dumps by outcome: uploaded (verified by the controller), hash_only (kept on the agent), aborted (Windows did not finish the file), truncated (shorter than its header declares), failed.",
		}, []string{"result"}),
		raw: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livedump_agent_dump_bytes_uploaded_total",
			Help: "Raw (uncompressed) dump bytes sent to the controller.",
		}),
		compressed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livedump_agent_dump_upload_compressed_bytes_total",
			Help: "Compressed dump bytes sent to the controller (zstd frames).",
		}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "livedump_agent_dump_upload_seconds",
			Help:    "Duration of the upload attempt that completed a dump, from the header to the controller's verified answer.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14), // 1s .. ~2.3h
		}),
		resumes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livedump_agent_dump_upload_resumes_total",
			Help: "Dump uploads that resumed from a non-zero committed offset.",
		}),
		noDump: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livedump_agent_dump_triggers_without_dump_total",
			Help: "Triggers that called lkd() and got no live dump: dropped while another dump was being written, throttled or failed by Windows.",
		}),
	}
	for _, r := range []string{resultUploaded, resultHashOnly, resultAborted, resultTruncated, resultFailed} {
		m.dumps.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.dumps, m.raw, m.compressed, m.seconds, m.resumes, m.noDump} {
			if err := reg.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if errors.As(err, &are) {
					// A second Manager in one process (tests, restarts)
					// shares the first one's collectors.
					switch c {
					case m.dumps:
						m.dumps = are.ExistingCollector.(*prometheus.CounterVec)
					case m.raw:
						m.raw = are.ExistingCollector.(prometheus.Counter)
					case m.compressed:
						m.compressed = are.ExistingCollector.(prometheus.Counter)
					case m.seconds:
						m.seconds = are.ExistingCollector.(prometheus.Histogram)
					case m.resumes:
						m.resumes = are.ExistingCollector.(prometheus.Counter)
					case m.noDump:
						m.noDump = are.ExistingCollector.(prometheus.Counter)
					}
					continue
				}
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) result(r string) { m.dumps.WithLabelValues(r).Inc() }
