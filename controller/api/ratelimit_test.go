package api

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/livedump/livedump/controller/store"
	"github.com/livedump/livedump/controller/store/sqlite"
	livedumpv1 "github.com/livedump/livedump/proto/livedump/v1"
)

func TestSourceKey(t *testing.T) {
	tests := []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 4000}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 4000}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:aaaa::1"), Port: 4000}, "2001:db8:1:2::/64"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:bbbb::9"), Port: 5000}, "2001:db8:1:2::/64"},
		{nil, "unknown"},
	}
	for _, tt := range tests {
		if got := sourceKey(tt.addr); got != tt.want {
			t.Errorf("sourceKey(%v) = %q, want %q", tt.addr, got, tt.want)
		}
	}
}

func TestBoundAnonymousEntry(t *testing.T) {
	e := store.AuditEntry{
		Actor: "anonymous@192.0.2.7:4000", Action: "AgentService/Enroll",
		Outcome: "invalid_argument: " + strings.Repeat("x", 1<<20), Details: `{"source":"` + strings.Repeat("y", 5000) + `"}`,
	}
	boundAnonymousEntry(&e)
	n := len(e.Actor) + len(e.Action) + len(e.Target) + len(e.Outcome) + len(e.Details)
	if n > maxAnonymousAudit {
		t.Fatalf("entry of %d bytes, want <= %d: %+v", n, maxAnonymousAudit, e)
	}
	if !strings.HasSuffix(e.Outcome, "[truncated]") || e.Details != `{"truncated":true}` {
		t.Errorf("truncation not marked: outcome ends %q, details %q", e.Outcome[len(e.Outcome)-20:], e.Details)
	}
	small := store.AuditEntry{Actor: "token/abcdefgh", Action: "AgentService/Enroll", Outcome: "ok", Details: `{"source":"192.0.2.7:4000"}`}
	want := small
	boundAnonymousEntry(&small)
	if small != want {
		t.Errorf("a small entry changed: %+v", small)
	}
}

func TestValidateEnrollSizes(t *testing.T) {
	long := strings.Repeat("a", 1<<20)
	tests := []struct {
		name  string
		field string
		ok    bool
		req   func() (token string, csr []byte, labels map[string]string)
	}{
		{"fine", "", true, func() (string, []byte, map[string]string) {
			return "ldt_abcdefgh_" + strings.Repeat("b", 32), make([]byte, 600), map[string]string{"site": "ams"}
		}},
		{"token", "token", false, func() (string, []byte, map[string]string) { return long, nil, nil }},
		{"csr", "csr", false, func() (string, []byte, map[string]string) { return "", []byte(long), nil }},
		{"label key", "labels", false, func() (string, []byte, map[string]string) { return "", nil, map[string]string{long: "v"} }},
		{"label value", "labels", false, func() (string, []byte, map[string]string) { return "", nil, map[string]string{"k": long} }},
		{"label count", "labels", false, func() (string, []byte, map[string]string) {
			m := map[string]string{}
			for i := range maxEnrollLabels + 1 {
				m[strings.Repeat("k", i+1)] = "v"
			}
			return "", nil, m
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, csr, labels := tt.req()
			err := validateEnrollSizes(enrollRequest(tok, csr, labels))
			if tt.ok != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && (!strings.Contains(err.Error(), tt.field+":") || len(err.Error()) > 200) {
				t.Errorf("error %q does not name %s briefly", err, tt.field)
			}
		})
	}
}

func enrollRequest(token string, csr []byte, labels map[string]string) *livedumpv1.EnrollRequest {
	return &livedumpv1.EnrollRequest{Token: token, Csr: csr, Labels: labels}
}

// TestEnrollLimiterAggregatesAudit: past the burst every call is refused and
// counted, but a source gets one audit entry per interval, which says how
// many calls it covers.
func TestEnrollLimiterAggregatesAudit(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	clock := clockwork.NewFakeClock()
	metric := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
	l := NewEnrollLimiter(EnrollLimiterConfig{Rate: 1, Burst: 3, Store: st, Metric: metric, Logger: slog.Default(), Clock: clock})
	pctx := peer.NewContext(ctx, &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}})
	call := func() error { return l.Check(pctx, livedumpv1.AgentService_Enroll_FullMethodName) }

	for i := range 3 {
		if err := call(); err != nil {
			t.Fatalf("call %d within the burst: %v", i, err)
		}
	}
	for range 10 {
		if err := call(); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("call past the burst: %v, want ResourceExhausted", err)
		}
	}
	l.flush(ctx, false) // as on wake: the first entry at once
	call()              // one more within the interval: held back
	l.flush(ctx, false)
	clock.Advance(DefaultRateLimitAuditInterval)
	l.flush(ctx, false)
	entries, err := st.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Fatalf("%d audit entries, want 2: %+v", len(entries), entries)
	}
	// Newest first.
	if !strings.Contains(entries[1].Outcome, "10 calls refused") || !strings.Contains(entries[0].Outcome, "1 calls refused") ||
		entries[0].Actor != "anonymous@192.0.2.7" {
		t.Errorf("entries: %+v", entries)
	}
	var m dto.Metric
	if err := metric.Write(&m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetCounter().GetValue(); got != 11 {
		t.Errorf("metric = %v, want 11", got)
	}
}
