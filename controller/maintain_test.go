package controller

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livedump/livedump/controller/fleet"
	"github.com/livedump/livedump/controller/store"
)

func TestGrace(t *testing.T) {
	for _, tc := range []struct {
		cfg, want time.Duration
	}{
		{0, shutdownGrace},
		{-time.Second, shutdownGrace},
		{time.Nanosecond, time.Nanosecond},
		{3 * time.Second, 3 * time.Second},
		{time.Minute, time.Minute},
	} {
		c := &Controller{cfg: Config{ShutdownGrace: tc.cfg}}
		if got := c.grace(); got != tc.want {
			t.Errorf("ShutdownGrace %s: grace %s, want %s", tc.cfg, got, tc.want)
		}
	}
}

func TestMaintainOnce(t *testing.T) {
	const interval = 10 * time.Second
	for _, tc := range []struct {
		name string
		// at is the time of the pass, from the heartbeat's time and the
		// server certificate.
		at          func(heartbeat time.Time, leaf *x509.Certificate) time.Time
		wantExpired bool
		wantRotated bool
	}{
		{"at once", func(hb time.Time, _ *x509.Certificate) time.Time { return hb }, false, false},
		{"two misses", func(hb time.Time, _ *x509.Certificate) time.Time { return hb.Add(2 * interval) }, false, false},
		{"three misses exactly", func(hb time.Time, _ *x509.Certificate) time.Time { return hb.Add(heartbeatMisses * interval) }, false, false},
		{"past three misses", func(hb time.Time, _ *x509.Certificate) time.Time {
			return hb.Add(heartbeatMisses*interval + time.Nanosecond)
		}, true, false},
		{"two thirds of the certificate's life", func(_ time.Time, leaf *x509.Certificate) time.Time {
			return leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 2 / 3)
		}, true, false},
		{"past two thirds", func(_ time.Time, leaf *x509.Certificate) time.Time {
			return leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore)*2/3 + time.Second)
		}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := fakeClockAt()
			cfg := testConfig(t.TempDir())
			cfg.MetricsListen = "-"
			cfg.Clock = clock
			cfg.HeartbeatInterval = interval
			c := newController(t, cfg)

			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			c.fleet.Attach("agent-1", clock.Now(), cancel)
			before := c.server.cur.Load()

			c.maintainOnce(tc.at(clock.Now(), before.Leaf))

			if expired := errors.Is(context.Cause(ctx), fleet.ErrHeartbeatTimeout); expired != tc.wantExpired {
				t.Errorf("session expired: %v (cause %v), want %v", expired, context.Cause(ctx), tc.wantExpired)
			}
			after := c.server.cur.Load()
			if rotated := after != before; rotated != tc.wantRotated {
				t.Errorf("server certificate rotated: %v, want %v", rotated, tc.wantRotated)
			}
			if tc.wantRotated {
				if after.Leaf.SerialNumber.Cmp(before.Leaf.SerialNumber) == 0 || !after.Leaf.NotBefore.After(before.Leaf.NotBefore) {
					t.Errorf("rotated certificate %v from %v, was %v from %v",
						after.Leaf.SerialNumber, after.Leaf.NotBefore, before.Leaf.SerialNumber, before.Leaf.NotBefore)
				}
				if err := after.Leaf.CheckSignatureFrom(c.CA().Cert); err != nil {
					t.Errorf("rotated certificate: %v", err)
				}
			}
		})
	}
}

// TestMaintainTicks checks the loop around maintainOnce: a pass at every
// heartbeat interval of the configured clock, and an end with ctx.
func TestMaintainTicks(t *testing.T) {
	const interval = 10 * time.Second
	clock := fakeClockAt()
	cfg := testConfig(t.TempDir())
	cfg.MetricsListen = "-"
	cfg.Clock = clock
	cfg.HeartbeatInterval = interval
	c := newController(t, cfg)

	session, cancelSession := context.WithCancelCause(context.Background())
	defer cancelSession(nil)
	c.fleet.Attach("agent-1", clock.Now(), cancelSession)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.maintain(ctx); close(done) }()
	if err := clock.BlockUntilContext(ctx, 1); err != nil { // the ticker
		t.Fatal(err)
	}
	for range heartbeatMisses + 1 {
		clock.Advance(interval)
	}
	<-session.Done()
	if cause := context.Cause(session); !errors.Is(cause, fleet.ErrHeartbeatTimeout) {
		t.Errorf("session ended with %v", cause)
	}
	cancel()
	<-done
}

// auditStore is a store whose ListAudit, the readiness probe, returns err.
type auditStore struct {
	store.Store
	err error
}

func (s auditStore) ListAudit(context.Context, store.AuditFilter) ([]store.AuditEntry, error) {
	return nil, s.err
}

func TestHTTPHandler(t *testing.T) {
	reg := prometheus.NewRegistry()
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "livedump_controller_test_gauge", Help: "A test gauge."})
	gauge.Set(42)
	reg.MustRegister(gauge)

	type request struct {
		method, path string
		code         int
		body         string // a substring of the response
	}
	common := []request{
		{"GET", "/metrics", http.StatusOK, "livedump_controller_test_gauge 42"},
		{"GET", "/healthz", http.StatusOK, "ok"},
		{"HEAD", "/healthz", http.StatusOK, ""},
		{"GET", "/", http.StatusNotFound, ""},
		{"GET", "/metricsx", http.StatusNotFound, ""},
		{"GET", "/debug/vars", http.StatusNotFound, ""},
	}
	for _, tc := range []struct {
		name     string
		pprof    bool
		storeErr error
		requests []request
	}{
		{"ready", false, nil, append(common,
			request{"GET", "/readyz", http.StatusOK, "ok"},
			request{"GET", "/debug/pprof/", http.StatusNotFound, ""},
		)},
		{"store down", false, errors.New("database is locked"), append(common,
			request{"GET", "/readyz", http.StatusServiceUnavailable, "store: database is locked"},
		)},
		{"pprof", true, nil, append(common,
			request{"GET", "/readyz", http.StatusOK, "ok"},
			request{"GET", "/debug/pprof/", http.StatusOK, "goroutine"},
			request{"GET", "/debug/pprof/cmdline", http.StatusOK, ""},
		)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Controller{cfg: Config{Pprof: tc.pprof}, registry: reg, store: auditStore{err: tc.storeErr}}
			h := c.httpHandler()
			for _, r := range tc.requests {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, httptest.NewRequest(r.method, r.path, nil))
				if w.Code != r.code || !strings.Contains(w.Body.String(), r.body) {
					t.Errorf("%s %s: %d %.200q, want %d with %q", r.method, r.path, w.Code, w.Body.String(), r.code, r.body)
				}
			}
		})
	}
}
